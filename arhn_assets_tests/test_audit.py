"""The judge audit's truths (planted false negatives, RLHN's recorded verdicts) and its scores."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from arhn_assets.core.audit import (
    AuditConfig,
    agreement,
    bucket_labels,
    parse_rlhn_verdict,
    planted_false_negatives,
    rlhn_audit_set,
    rlhn_verdicts,
    run_audit,
    scripted_judgments,
)
from arhn_assets.core.audit.report import overall
from arhn_assets.core.beir_io import load_beir_dataset
from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.parsing import parse_snippet
from arhn_assets.core.sampling import QuerySample
from arhn_assets_tests.helpers.run_configs import smollm2_resources

RLHN_STAGE_2 = "rlhn_llm_judgments/fiqa.stage_2.gpt-4o.jsonl.gz"


def test_planted_false_negatives_keep_the_first_relevant_document():
    qrels = pl.DataFrame(
        {
            "query_id": ["q1", "q1", "q1", "q2", "q3", "q3"],
            "doc_id": ["a", "b", "c", "d", "e", "f"],
            "score": [2, 1, 2, 1, 1, 0],
        }
    )
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
    with gzip.open(path, "rt") as lines:
        records = [json.loads(line) for line in lines]
    verdicts, skipped = rlhn_verdicts(enumerate(records, start=1), str(path))
    assert skipped == []
    assert verdicts["query_id"].n_unique() == len(records) == 17
    assert verdicts.height == sum(len(r["negative_passage_ids"]) for r in records)
    counts = dict(verdicts["verdict"].value_counts().iter_rows())
    assert counts["better"] == 2 and counts["worse"] == 21
    # Doc (9) of the 14th record is its 9th negative
    fourteenth = verdicts.filter(pl.col("query_id") == str(records[13]["query_id"]))
    assert fourteenth.filter(pl.col("verdict") == "better")["doc_id"].to_list() == [
        str(d) for d in records[13]["negative_passage_ids"][8:10]
    ]


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        ("no verdict here", "no <verdict>"),
        ("<verdict><better> x: [Doc (1)] </better></verdict>", "no <worse>"),
        ("<verdict><better>: [Doc (9)]</better><worse>: []</worse></verdict>", "outside 1..2"),
    ],
)
def test_a_broken_verdict_is_skipped_with_its_line(response, problem):
    good = {
        "query_id": "q1",
        "negative_passage_ids": ["n1", "n2"],
        "response": "<verdict><better>: [Doc (2)]</better><worse>: []</worse></verdict>",
    }
    verdicts, skipped = rlhn_verdicts([(1, good), (2, {**good, "query_id": "q2", "response": response})], "file.jsonl")
    assert verdicts["query_id"].unique().to_list() == ["q1"]
    assert verdicts["verdict"].to_list() == ["none", "better"]
    [line] = skipped
    assert line.startswith("file.jsonl:2 [response]") and problem in line


def test_parse_rlhn_verdict_reads_both_lists():
    verdict = parse_rlhn_verdict(
        "<verdict>\n<better> Preferred: [Doc (9), Doc (10)] </better>,\n<worse> Relevant:  [Doc (3)] "
        "</worse>\n</verdict>"
    )
    assert (verdict.better, verdict.worse) == ([9, 10], [3])


def test_agreement_scores_each_configuration_against_the_truth():
    # four judged negatives of one query; n1 and n2 are the real false negatives
    expected = [True, True, False, False]
    table = pl.DataFrame(
        {
            "config": ["R"] * 4 + ["F"] * 4 + ["R+F"] * 4,
            "doc_id": ["n1", "n2", "n3", "n4"] * 3,
            "mining_rank": [1, 2, 3, 4] * 3,
            "rank_bucket": ["1-2", "1-2", "3-4", "3-4"] * 3,
            "expected": expected * 3,
            "flagged": [True, False, True, False] + [False, True, False, False] + [True, True, True, False],
        }
    )
    scores = {row["config"]: row for row in agreement(table).iter_rows(named=True)}
    assert (scores["R"]["precision"], scores["R"]["recall"], scores["R"]["kappa"]) == (0.5, 0.5, 0.0)
    assert (scores["F"]["precision"], scores["F"]["recall"]) == (1.0, 0.5) and scores["F"]["kappa"] == pytest.approx(
        0.5
    )
    assert scores["R+F"]["recall"] == 1.0 and scores["R+F"]["f1"] == pytest.approx(0.8)
    assert (
        scores["R+F"]["true_positives"],
        scores["R+F"]["false_positives"],
        scores["R+F"]["false_negatives"],
        scores["R+F"]["true_negatives"],
    ) == (2, 1, 0, 1)
    by_rank = agreement(table, by="rank_bucket").filter(pl.col("config") == "R")
    assert by_rank.select("rank_bucket", "true_positives", "flagged").rows() == [("1-2", 1, 1), ("3-4", 0, 1)]


def test_rank_buckets_read_from_the_top_of_the_mined_list():
    assert bucket_labels((3, 10, 30)) == ["1-3", "4-10", "11-30", "31+"]
    assert bucket_labels(()) == ["1+"]


def test_a_reference_judge_ranks_by_grade_with_the_positive_last_of_its_grade_and_copies_its_spans():
    candidates = pl.DataFrame(
        {
            "dataset": "d",
            "query_id": "q",
            "doc_id": ["p", "a", "b", "c"],
            "source": ["positive", "mined", "mined", "mined"],
        }
    )
    passages = pl.DataFrame(
        {
            "doc_id": ["p", "a", "b", "c"],
            "title": ["", "A", "", ""],
            "text": [
                "Positive. More.",
                "  Equally relevant!  Next",
                "Highly relevant text without a stop",
                "Unrelated.",
            ],
        }
    )
    snippets, rankings = scripted_judgments(
        candidates, passages, {("q", "p"): 1, ("q", "a"): 1, ("q", "b"): 2}, "reference"
    )
    assert rankings.row(0, named=True) | {"window_statuses": None} == {
        "dataset": "d",
        "query_id": "q",
        "ranking": ["b", "a", "p", "c"],
        "positive_rank": 3,
        "status": "ok",
        "windows": 1,
        "window_statuses": None,
        "model": "reference",
        "prompt_version": 0,
    }
    by_doc = {row["doc_id"]: row for row in snippets.iter_rows(named=True)}
    assert (
        by_doc["a"]["snippet"] == "Equally relevant!"
        and by_doc["b"]["snippet"] == "Highly relevant text without a stop"
    )
    assert by_doc["c"]["status"] == "no_answer" and by_doc["p"]["is_original_positive"]
    for doc, text in passages.select("doc_id", "text").iter_rows():
        if by_doc[doc]["status"] == "answer":  # the pipeline's own grounding check accepts each span
            assert parse_snippet(by_doc[doc]["snippet"], text, "NO_ANSWER").status == "answer"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"judge": "oracle", "truth": "verdicts", "verdicts_file": "v.jsonl"}, "oracle judge answers from qrels"),
        ({"judge": "replay"}, "replay judge answers with recorded verdicts"),
        ({"truth": "verdicts"}, "needs verdicts_file"),
        ({"rank_bucket_edges": (10, 3)}, "increasing positive ranks"),
    ],
)
def test_an_audit_config_that_cannot_work_is_refused(options, problem):
    with pytest.raises(ValueError, match=problem):
        AuditConfig(**options)


@pytest.mark.slow
@pytest.mark.all_cores
def test_the_oracle_flags_every_planted_false_negative_that_mining_finds_in_scifact(shared_data, embedding_cache):
    """Real SciFact train qrels, the whole corpus, all-MiniLM-L6-v2: the machinery end to end."""
    beir = load_beir_dataset("scifact", [shared_data / "scifact"], download=False)
    encoder = Encoder(EncoderSpec(model=""), embedding_cache)
    result = run_audit(AuditConfig(judge="oracle"), "scifact", beir, None, encoder, None)
    scores = {row["config"]: row for row in overall(result.scores).iter_rows(named=True)}
    assert scores["R+F"]["recall"] >= 0.95 and scores["R+F"]["precision"] == 1.0
    assert scores["R+F"]["average_precision"] == 1.0  # the oracle's probability is 1 for every planted document
    # binary qrels: every planted document is as relevant as the positive, so it is promoted (R)
    assert scores["R"]["recall"] == scores["R+F"]["recall"] and scores["F"]["flagged"] == 0
    found = scores["R+F"]["expected"]
    assert result.facts["planted false negatives found by mining"] == f"{found} of 110" and found > 50
    assert result.facts["queries judged"] == 77 and result.table.height == 3 * 770
    assert set(result.scores["rank_bucket"]) <= {"all", "1-3", "4-10", "11-30", "31+"}
    # the pipeline's positive-aware margin removes most planted documents before any judge sees them
    margin = run_audit(AuditConfig(judge="oracle", relative_margin=0.05), "scifact", beir, None, encoder, None)
    assert overall(margin.scores).filter(pl.col("config") == "R+F")["expected"][0] < found
    # a query sample audits just those queries
    sampled = run_audit(
        AuditConfig(judge="oracle"), "scifact", beir, None, encoder, None, QuerySample(5, "seeded", seed=1)
    )
    assert sampled.facts["queries judged"] == 5 and sampled.table["query_id"].n_unique() == 5


def test_the_replay_judge_agrees_perfectly_with_the_gpt4o_verdicts_it_replays(shared_data):
    result = run_audit(
        AuditConfig(judge="replay", truth="verdicts", verdicts_file=RLHN_STAGE_2),
        "fiqa",
        None,
        shared_data / RLHN_STAGE_2,
        None,
        None,
    )
    counts = {
        row["config"]: (row["expected"], row["flagged"], row["f1"], row["kappa"])
        for row in overall(result.scores).iter_rows(named=True)
    }
    assert counts == {"R": (2, 2, 1.0, 1.0), "F": (21, 21, 1.0, 1.0), "R+F": (23, 23, 1.0, 1.0)}
    assert result.problems == () and result.facts["queries judged"] == 17 and result.facts["negatives judged"] == 255
    # the mining rank of a recorded negative is its position in the recorded list
    assert result.table["mining_rank"].max() == 15


def test_a_bad_rlhn_record_is_skipped_by_file_line_and_field_and_the_others_kept(shared_data, tmp_path):
    path = shared_data / RLHN_STAGE_2
    with gzip.open(path, "rt") as lines:
        good = [json.loads(line) for line in lines][:2]
    no_positives = {**good[1], "positive_passages": []}
    bad_verdict = {**good[1], "query_id": "other", "response": "I cannot decide."}
    broken = tmp_path / "verdicts.jsonl"
    broken.write_text(
        "\n".join([json.dumps(good[0]), "{not json", json.dumps(no_positives), json.dumps(bad_verdict)]) + "\n"
    )
    audit = rlhn_audit_set(broken, "fiqa")
    assert audit.triplets["query_id"].to_list() == [str(good[0]["query_id"])]
    negatives = len(good[0]["negative_passages"])
    assert audit.candidates.height == len(good[0]["positive_passages"]) + negatives and audit.labels.height == negatives
    # the passages of skipped records are not kept
    assert audit.passages.height == len(
        {p["docid"] for p in good[0]["positive_passages"] + good[0]["negative_passages"]}
    )
    assert [p.split(" ", 1)[0] for p in audit.problems] == [f"{broken}:2", f"{broken}:3", f"{broken}:4"]
    assert "[<line>] invalid JSON" in audit.problems[0]
    assert "[positive_passages]" in audit.problems[1] and "[response] no <verdict>" in audit.problems[2]


@pytest.mark.slow
@pytest.mark.all_cores
def test_the_judge_audit_asset_audits_the_embedded_llm_and_the_warehouse_scores_it_alike(lake_home, shared_data):
    """Through Dagster: the real SmolLM2 judges one RLHN record, then dbt builds judge_agreement."""
    import dagster as dg

    from arhn_assets.cli import pipeline_job
    from arhn_assets.definitions import defs
    from arhn_assets_tests.helpers.warehouse import frame

    config = {
        "ops": {
            "judge_audit": {
                "config": {
                    "judge": "llm",
                    "truth": "verdicts",
                    "verdicts_file": RLHN_STAGE_2,
                    "relabel_requires_snippet": True,  # make run's rule: R must answer too
                }
            }
        },
        "resources": {**smollm2_resources(), "query_sample": {"config": {"size": 1}}},
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["fiqa-rlhn"])
        result = pipeline_job(defs(), "group:audit+").execute_in_process(
            partition_key="fiqa-rlhn", instance=instance, run_config=config
        )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    assert {"judge_audit", "stg_judge_audit", "judge_agreement"} <= {
        c.asset_check_key.asset_key.to_user_string() for c in checks
    }

    table = pl.read_parquet(lake_home / "lake" / "judge_audit" / "dataset=fiqa-rlhn" / "part-0.parquet")
    assert table.height == 3 * 15 and set(table["judge"]) == {"llm"} and set(table["truth"]) == {"verdicts"}
    assert table["model"][0].startswith("llama.cpp:SmolLM2") and table["snippet_status"].null_count() == 0
    assert table["answer_probability"].is_between(0.0, 1.0).all()
    relabelled = table.filter(pl.col("decision") == "relabel_positive")
    assert (relabelled["snippet_status"] == "answer").all()
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "judge_audit"]
    metadata = event.materialization.metadata
    expected = agreement(table)
    for row in expected.iter_rows(named=True):
        assert metadata[f"{row['config']}_recall"].value == round(row["recall"], 4)
    assert "R must answer" in metadata["report"].value
    assert "## By mining rank" in metadata["report"].value and "data:image/png;base64," in metadata["report"].value
    report = lake_home / "reports" / "fiqa-rlhn"
    assert "## Per configuration" in (report / "judge_audit_llm.md").read_text()
    assert (report / "judge_audit_llm.png").read_bytes().startswith(b"\x89PNG")

    import duckdb

    scores = pl.read_parquet(lake_home / "lake" / "judge_audit_scores" / "dataset=fiqa-rlhn" / "part-0.parquet")
    with duckdb.connect(str(lake_home / "warehouse.duckdb"), read_only=True) as warehouse:
        mart = frame(warehouse, "select * from judge_agreement where dataset = 'fiqa-rlhn'")
    # the warehouse serves the audit's own figures: every configuration overall, then by rank bucket
    assert mart.height == scores.height and mart.filter(pl.col("rank_bucket") == "all")["config"].to_list() == [
        "F",
        "R",
        "R+F",
    ]
    assert sorted(mart["recall"].to_list()) == sorted(scores["recall"].to_list())


@pytest.mark.slow
@pytest.mark.all_cores
def test_the_oracle_audit_through_dagster_plants_from_the_named_beir_folder(lake_home):
    """A partition of its own (`scifact-oracle`) planting from the `scifact` folder, as the README
    suggests for keeping several audits in the warehouse."""
    import dagster as dg

    from arhn_assets.cli import pipeline_job
    from arhn_assets.definitions import defs

    config = {
        "ops": {"judge_audit": {"config": {"judge": "oracle", "beir_dataset": "scifact", "rank_bucket_edges": [5]}}},
        "resources": {"query_sample": {"config": {"size": 20}}},
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["scifact-oracle"])
        result = pipeline_job(defs(), "judge_audit").execute_in_process(
            partition_key="scifact-oracle", instance=instance, run_config=config
        )
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    metadata = result.asset_materializations_for_node("judge_audit")[0].metadata
    assert metadata["R+F_recall"].value >= 0.95 and metadata["R+F_precision"].value == 1.0
    table = pl.read_parquet(lake_home / "lake" / "judge_audit" / "dataset=scifact-oracle" / "part-0.parquet")
    assert table["query_id"].n_unique() == 20 and set(table["rank_bucket"]) == {"1-5", "6+"}
    assert set(table["model"]) == {"oracle:qrels>=1"} and set(table["dataset"]) == {"scifact-oracle"}
    assert (lake_home / "reports" / "scifact-oracle" / "judge_audit_oracle.md").is_file()


def test_nothing_to_audit_is_a_clear_error_naming_the_file(tmp_path):
    folder = tmp_path / "one-positive"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "Yeast makes bread rise."}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "What makes bread rise?"}\n')
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    beir = load_beir_dataset("one-positive", [folder], download=False)
    with pytest.raises(ValueError, match=r"qrels/train.tsv has no query with two or more documents scored >= 1"):
        run_audit(AuditConfig(judge="oracle"), "one-positive", beir, None, None, None)

    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text('{"query_id": "q", "query": "x", "positive_passages": [], "response": ""}\n')
    with pytest.raises(
        ValueError,
        match=r"verdicts.jsonl holds no valid RLHN judgment record; .*verdicts.jsonl:1 \[positive_passages\]",
    ):
        run_audit(AuditConfig(judge="replay", truth="verdicts", verdicts_file="v"), "v", None, verdicts, None, None)
