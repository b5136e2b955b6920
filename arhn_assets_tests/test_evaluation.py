"""Metrics against hand-computed values, paired tests, and the base model's published SciFact
figure (MTEB: all-MiniLM-L6-v2 nDCG@10 = 0.6451)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from arhn_assets.core.beir_io import load_beir_dataset
from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.evaluation import evaluate, mean_scores, paired_tests, score_run


def test_metrics_reproduce_hand_computed_values():
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d5": 2}}
    run = {"q1": {"d3": 0.9, "d1": 0.8, "d4": 0.7, "d2": 0.6}, "q2": {"d5": 0.5, "d6": 0.4}, "unjudged": {"d1": 1.0}}
    scores = {(q, m): v for q, m, v in score_run(qrels, run).iter_rows()}
    ideal = 1 + 1 / math.log2(3)
    assert scores[("q1", "ndcg@10")] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert scores[("q1", "mrr@10")] == pytest.approx(0.5)
    assert scores[("q1", "map@100")] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert scores[("q1", "recall@100")] == pytest.approx(1.0)
    assert scores[("q2", "ndcg@10")] == pytest.approx(1.0) and scores[("q2", "mrr@10")] == pytest.approx(1.0)
    assert "unjudged" not in {q for q, _ in scores}


def test_mrr_is_cut_at_ten():
    run = {"q": {f"d{i}": 1.0 - i / 100 for i in range(12)}}
    scores = dict(
        score_run({"q": {"d11": 1}}, run).filter(pl.col("metric") == "mrr@10").select("metric", "value").iter_rows()
    )
    assert scores["mrr@10"] == 0.0


def test_paired_tests_find_a_consistent_gain_and_no_change():
    rows = [
        (c, f"q{i}", "ndcg@10", v)
        for i in range(20)
        for c, v in (("baseline", 0.5 + i / 100), ("R", 0.6 + i / 100 + (i % 3) / 1000), ("F", 0.5 + i / 100))
    ]
    frame = pl.DataFrame(rows, schema=["config", "query_id", "metric", "value"], orient="row")
    tests = {c: (d, p) for c, _, _, d, p, _ in paired_tests(frame, "baseline").iter_rows()}
    assert tests["R"][0] == pytest.approx(0.101, abs=1e-3) and tests["R"][1] < 1e-6
    assert tests["F"] == (0.0, 1.0)


@pytest.mark.slow
def test_base_model_reproduces_its_published_scifact_ndcg(shared_data, embedding_cache):
    scifact = load_beir_dataset("scifact", [shared_data / "scifact"], download=False)
    per_query = evaluate(Encoder(EncoderSpec(), embedding_cache), scifact)
    assert per_query["query_id"].n_unique() == 300
    assert mean_scores(per_query)["ndcg@10"] == pytest.approx(0.6451, abs=0.002)
