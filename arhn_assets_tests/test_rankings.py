"""Sliding-window ranking: window placement, bubbling the best passages up, statuses, shuffling."""

from __future__ import annotations

import polars as pl
import pytest

from arhn_assets.core.llm.cache import CallCache
from arhn_assets.core.llm.llama_cpp import LlamaCppBackend
from arhn_assets.core.parsing import parse_ranking
from arhn_assets.core.rankings import (
    RankingConfig,
    WindowRequest,
    rank_candidates,
    rank_with_sliding_windows,
    shuffled,
    window_bounds,
)


def relevance_judge(relevance: dict[str, float], broken: set[str] = frozenset()):
    """Ranks each window by known relevance and answers in RankGPT's text format, through the
    real parser; queries in `broken` answer prose instead."""

    def judge(requests: list[WindowRequest]):
        parses = []
        for request in requests:
            order = sorted(range(len(request.doc_ids)), key=lambda i: -relevance[request.doc_ids[i]])
            text = "I cannot rank these." if request.query_id in broken else " > ".join(f"[{i + 1}]" for i in order)
            parses.append(parse_ranking(text, len(request.doc_ids), r"^\s*\[\d+\](\s*>\s*\[\d+\])*\s*$"))
        return parses

    return judge


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (5, [(0, 5)]),
        (20, [(0, 20)]),
        (21, [(1, 21), (0, 11)]),
        (25, [(5, 25), (0, 15)]),
        (30, [(10, 30), (0, 20)]),
        (45, [(25, 45), (15, 35), (5, 25), (0, 15)]),
        (0, []),
    ],
)
def test_windows_cover_the_list_from_the_end_without_repeats(n, expected):
    assert window_bounds(n, 20, 10) == expected


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 19, 20, 21, 25, 37, 60])
def test_the_best_step_passages_bubble_to_the_top_in_order(n):
    docs = [f"d{i}" for i in range(n)]
    relevance = {d: (i * 7919) % 101 + i / 1000 for i, d in enumerate(docs)}  # a scrambled, tie-free order
    result = rank_with_sliding_windows({"q": docs}, relevance_judge(relevance), window_size=20, step=10)["q"]
    truth = sorted(docs, key=lambda d: -relevance[d])
    assert sorted(result.ranking) == sorted(docs)
    assert result.ranking[: min(10, n)] == truth[: min(10, n)]
    if n <= 20:
        assert result.ranking == truth
    assert result.windows == len(window_bounds(n, 20, 10)) and result.status == "ok"


def test_queries_are_batched_per_window_pass_and_statuses_aggregate():
    calls = []
    relevance = {f"d{i}": float(i) for i in range(30)}
    judge = relevance_judge(relevance, broken={"bad"})

    def counting_judge(requests):
        calls.append([r.query_id for r in requests])
        return judge(requests)

    candidates = {"long": [f"d{i}" for i in range(30)], "short": ["d1", "d2"], "bad": ["d3", "d4", "d5"]}
    results = rank_with_sliding_windows(candidates, counting_judge)
    assert calls == [["long", "short", "bad"], ["long"]]
    assert results["bad"].status == "wrong_format" and results["bad"].ranking == ["d3", "d4", "d5"]
    assert results["short"].ranking == ["d2", "d1"] and results["long"].status == "ok"


def test_a_judge_that_loses_answers_is_an_error():
    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        rank_with_sliding_windows({"q": ["a", "b"]}, lambda requests: [])


def test_shuffle_is_seeded_per_query_and_independent_of_call_order():
    docs = [f"d{i}" for i in range(15)]
    first = shuffled("q1", docs, seed=13)
    assert shuffled("q2", docs, seed=13) != first or shuffled("q3", docs, seed=13) != first
    assert shuffled("q1", docs, seed=13) == first and sorted(first) == sorted(docs)
    assert shuffled("q1", docs, seed=14) != first


def pointwise_inputs(probabilities: dict[str, float | None]):
    docs = list(probabilities)
    candidates = pl.DataFrame(
        {"dataset": "toy", "query_id": "q", "doc_id": docs, "source": ["positive"] + ["mined"] * (len(docs) - 1)}
    )
    triplets = pl.DataFrame({"query_id": ["q"], "query_text": ["why?"], "instruction": [""]})
    snippets = pl.DataFrame(
        {
            "query_id": "q",
            "doc_id": docs,
            "answer_probability": list(probabilities.values()),
            "model": "llama.cpp:toy.gguf",
            "prompt_version": 1,
        },
        schema_overrides={"answer_probability": pl.Float64},
    )
    return candidates, triplets, snippets


def test_pointwise_ranking_orders_by_answer_probability_without_a_call(tmp_path):
    candidates, triplets, snippets = pointwise_inputs({"p": 0.6, "n1": 0.9, "n2": 0.1, "n3": 0.6})
    backend = LlamaCppBackend("smollm2-135m", tmp_path)  # never loaded: pointwise makes no call
    frame, stats = rank_candidates(
        candidates,
        triplets,
        pl.DataFrame(),
        snippets,
        backend,
        CallCache(tmp_path / "c.sqlite"),
        RankingConfig(rank_on="answer_probability"),
    )
    row = frame.row(0, named=True)
    assert row["ranking"][0] == "n1" and row["ranking"][-1] == "n2" and set(row["ranking"][1:3]) == {"p", "n3"}
    assert row["positive_rank"] == row["ranking"].index("p") + 1 and row["status"] == "ok" and row["windows"] == 0
    assert row["model"] == "llama.cpp:toy.gguf" and stats.calls == 0 and backend._server is None


def test_pointwise_ranking_refuses_a_backend_without_logprobs(tmp_path):
    candidates, triplets, snippets = pointwise_inputs({"p": 0.6, "n1": None})
    with pytest.raises(
        ValueError, match=r"the LlamaCppBackend backend's model llama.cpp:toy.gguf returned no log-probabilities"
    ):
        rank_candidates(
            candidates,
            triplets,
            pl.DataFrame(),
            snippets,
            LlamaCppBackend("", tmp_path),
            CallCache(tmp_path / "c.sqlite"),
            RankingConfig(rank_on="answer_probability"),
        )
