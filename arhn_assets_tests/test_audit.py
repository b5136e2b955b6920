"""The judge audit's truths (planted false negatives, RLHN's recorded verdicts) and its scores."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from arhn_assets.core.audit import agreement, parse_rlhn_verdict, planted_false_negatives, rlhn_verdicts
from arhn_assets.core.beir_io import load_beir_dataset


def test_planted_false_negatives_keep_the_first_relevant_document():
    qrels = pl.DataFrame({
        "query_id": ["q1", "q1", "q1", "q2", "q3", "q3"],
        "doc_id": ["a", "b", "c", "d", "e", "f"],
        "score": [2, 1, 2, 1, 1, 0],
    })
    assert planted_false_negatives(qrels).rows() == [("q1", "a", ["b", "c"])]
    # graded qrels: only the highly relevant count
    assert planted_false_negatives(qrels, min_score=2).rows() == [("q1", "a", ["c"])]


def test_scifact_train_has_queries_to_plant_false_negatives_in(shared_data):
    qrels = load_beir_dataset("scifact", [shared_data / "scifact"], download=False).qrels("train")
    planted = planted_false_negatives(qrels)
    per_query = qrels.group_by("query_id").len()
    assert planted.height == per_query.filter(pl.col("len") >= 2).height > 50
    # every relevant pair is either a kept positive or a planted false negative
    assert planted["planted"].list.len().sum() == per_query.filter(pl.col("len") >= 2)["len"].sum() - planted.height


def test_rlhn_verdicts_of_the_gpt4o_stage_are_read_in_full(shared_data):
    path = shared_data / "rlhn_llm_judgments" / "fiqa.stage_2.gpt-4o.jsonl.gz"
    records = [json.loads(line) for line in gzip.open(path, "rt")]
    verdicts, skipped = rlhn_verdicts(records, str(path))
    assert skipped == []
    assert verdicts["query_id"].n_unique() == len(records) == 17
    assert verdicts.height == sum(len(r["negative_passage_ids"]) for r in records)
    counts = dict(verdicts["verdict"].value_counts().iter_rows())
    assert counts["better"] == 2 and counts["worse"] == 21
    # Doc (9) of the 14th record is its 9th negative
    fourteenth = verdicts.filter(pl.col("query_id") == str(records[13]["query_id"]))
    assert fourteenth.filter(pl.col("verdict") == "better")["doc_id"].to_list() == [str(d) for d in records[13]["negative_passage_ids"][8:10]]


@pytest.mark.parametrize(("response", "problem"), [
    ("no verdict here", "no <verdict>"),
    ("<verdict><better> x: [Doc (1)] </better></verdict>", "no <worse>"),
    ("<verdict><better>: [Doc (9)]</better><worse>: []</worse></verdict>", "outside 1..2"),
])
def test_a_broken_verdict_is_skipped_with_its_line(response, problem):
    good = {"query_id": "q1", "negative_passage_ids": ["n1", "n2"], "response": "<verdict><better>: [Doc (2)]</better><worse>: []</worse></verdict>"}
    verdicts, skipped = rlhn_verdicts([good, {**good, "query_id": "q2", "response": response}], "file.jsonl")
    assert verdicts["query_id"].unique().to_list() == ["q1"]
    assert verdicts["verdict"].to_list() == ["none", "better"]
    [line] = skipped
    assert line.startswith("file.jsonl:2 [response]") and problem in line


def test_parse_rlhn_verdict_reads_both_lists():
    verdict = parse_rlhn_verdict("<verdict>\n<better> Preferred: [Doc (9), Doc (10)] </better>,\n<worse> Relevant:  [Doc (3)] </worse>\n</verdict>")
    assert (verdict.better, verdict.worse) == ([9, 10], [3])


def test_agreement_scores_each_configuration_against_the_truth():
    # four judged negatives of one query; n1 and n2 are the real false negatives
    decisions = pl.DataFrame({
        "config": ["R"] * 4 + ["F"] * 4 + ["R+F"] * 4,
        "query_id": "q",
        "doc_id": ["n1", "n2", "n3", "n4"] * 3,
        "original_label": "negative",
        "decision": ["relabel_positive", "keep_negative", "relabel_positive", "keep_negative",
                     "keep_negative", "filter_ambiguous", "keep_negative", "keep_negative",
                     "relabel_positive", "filter_ambiguous", "relabel_positive", "keep_negative"],
    })
    truth = pl.DataFrame({"query_id": "q", "doc_id": ["n1", "n2", "n3", "n4"], "is_false_negative": [True, True, False, False],
                          "rank_bucket": ["1-2", "1-2", "3-4", "3-4"]})
    scores = {row["config"]: row for row in agreement(decisions, truth).iter_rows(named=True)}
    assert (scores["R"]["precision"], scores["R"]["recall"], scores["R"]["kappa"]) == (0.5, 0.5, 0.0)
    assert (scores["F"]["precision"], scores["F"]["recall"]) == (1.0, 0.5) and scores["F"]["kappa"] == pytest.approx(0.5)
    assert scores["R+F"]["recall"] == 1.0 and scores["R+F"]["f1"] == pytest.approx(0.8)
    by_rank = agreement(decisions, truth, by="rank_bucket").filter(pl.col("config") == "R")
    assert by_rank.select("rank_bucket", "true_positives", "flagged").rows() == [("1-2", 1, 1), ("3-4", 0, 1)]
