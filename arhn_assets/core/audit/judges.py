"""The reference judges, for the audit only (never for refinement): oracle (qrels) and replay
(recorded verdicts), both answering with verbatim spans in the pipeline's schemas."""

from __future__ import annotations

import re

import polars as pl

from arhn_assets.core.rankings import RANKINGS_SCHEMA
from arhn_assets.core.snippets import SNIPPETS_SCHEMA

# A verbatim span for the reference judges' snippets: the first sentence, else the first 40 words.
FIRST_SENTENCE = re.compile(r"\S.*?[.!?](?=\s|$)", re.DOTALL)
FIRST_WORDS = re.compile(r"\S+(?:\s+\S+){0,39}")


def verbatim_span(text: str) -> str:
    """A span copied from `text`, as a reference judge's snippet: its first sentence, else its
    first 40 words (the recorded verdicts and the qrels say *that* a passage answers, not where)."""
    match = FIRST_SENTENCE.match(text.strip()) or FIRST_WORDS.search(text)
    return match.group(0) if match else ""


def scripted_judgments(
    candidates: pl.DataFrame, passages: pl.DataFrame, grades: dict[tuple[str, str], int], model: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stage 1 and stage 2 answers of a reference judge that knows each candidate's grade:
    grade > 0 gets a verbatim snippet, and each query's candidates are ranked by grade, with a
    positive after the candidates of its own grade (one as relevant as the positive is promoted,
    not filtered: that is what the truth says of it), then in candidate order.
    Returns frames with the pipeline's `SNIPPETS_SCHEMA` and `RANKINGS_SCHEMA`."""
    texts = {d: (x or t or "") for d, t, x in passages.select("doc_id", "title", "text").iter_rows()}
    judged = candidates.filter(pl.col("source") != "reserve")
    snippets, rankings = [], []
    for (dataset, query_id), group in judged.group_by("dataset", "query_id", maintain_order=True):
        docs = group.select("doc_id", "source").rows()
        for doc_id, source in docs:
            grade = grades.get((query_id, doc_id), 0)
            answer = verbatim_span(texts[doc_id]) if grade > 0 else None
            snippets.append(
                (
                    dataset,
                    query_id,
                    doc_id,
                    source == "positive",
                    answer,
                    "answer" if answer else "no_answer",
                    1.0 if answer else 0.0,
                    answer or "NO_ANSWER",
                    model,
                    "reference",
                    0,
                    0,
                    0,
                    False,
                )
            )
        order = sorted(
            range(len(docs)), key=lambda i: (-grades.get((query_id, docs[i][0]), 0), docs[i][1] == "positive", i)
        )
        ranking = [docs[i][0] for i in order]
        positive_rank = min((r for r, i in enumerate(order, start=1) if docs[i][1] == "positive"), default=None)
        rankings.append((dataset, query_id, ranking, positive_rank, "ok", 1, ["ok"], model, 0))
    return (
        pl.DataFrame(snippets, schema=SNIPPETS_SCHEMA, orient="row"),
        pl.DataFrame(rankings, schema=RANKINGS_SCHEMA, orient="row"),
    )


def oracle_judgments(
    candidates: pl.DataFrame, passages: pl.DataFrame, qrels: pl.DataFrame, min_score: int = 1
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The `oracle` judge: a candidate answers when its qrels score is >= `min_score`, and the
    ranking follows the qrels scores. An audit tool: it needs the labels refinement lacks."""
    grades = {(q, d): s for q, d, s in qrels.filter(pl.col("score") >= min_score).iter_rows()}
    return scripted_judgments(candidates, passages, grades, f"oracle:qrels>={min_score}")


REPLAY_GRADES = {"better": 3, "worse": 1, "none": 0}
REPLAY_POSITIVE_GRADE = 2


def replay_judgments(
    candidates: pl.DataFrame, passages: pl.DataFrame, labels: pl.DataFrame, source: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The `replay` judge: a recorded verdict, as answers. `better` documents rank above the
    positive, `worse` ones below it and both carry a snippet; `none` ones answer nothing."""
    grades = {(q, d): REPLAY_GRADES[label] for q, d, label in labels.select("query_id", "doc_id", "label").iter_rows()}
    positives = candidates.filter(pl.col("source") == "positive").select("query_id", "doc_id").rows()
    grades |= {key: REPLAY_POSITIVE_GRADE for key in positives}
    return scripted_judgments(candidates, passages, grades, f"replay:{source}")
