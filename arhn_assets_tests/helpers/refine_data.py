"""The hand-made query the decision rule is tested on (core/refine.py), and builders of the
candidates, snippets and rankings frames `refine.decide` reads."""

from __future__ import annotations

import polars as pl


def candidates(query_id: str, positives: list[str], negatives: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "dataset": "toy",
            "query_id": query_id,
            "doc_id": positives + negatives,
            "source": ["positive"] * len(positives) + ["mined"] * len(negatives),
        }
    )


def snippets(query_id: str, statuses: dict[str, str], probabilities: dict[str, float] | None = None) -> pl.DataFrame:
    probability = [(probabilities or {}).get(d) for d in statuses]
    return pl.DataFrame(
        {
            "query_id": query_id,
            "doc_id": list(statuses),
            "status": list(statuses.values()),
            "answer_probability": probability,
            "model": "toy",
        },
        schema_overrides={"answer_probability": pl.Float64},
    )


def rankings(query_id: str, ranking: list[str], status: str = "ok") -> pl.DataFrame:
    return pl.DataFrame({"query_id": [query_id], "ranking": [ranking], "status": [status]})


# n1 is ranked above the positive and answers; n2 is below and answers; n3 answers NO_ANSWER;
# n4's span was not in the passage (ungrounded: not an answer); n5 has no snippet row at all.
CANDIDATES = candidates("q", ["p"], ["n1", "n2", "n3", "n4", "n5"])
SNIPPETS = snippets("q", {"p": "answer", "n1": "answer", "n2": "answer", "n3": "no_answer", "n4": "ungrounded"})
RANKING = rankings("q", ["n1", "p", "n2", "n3", "n4", "n5"])
