"""The asset checks: each rule on hand-made frames, then real Dagster runs in which a failing
blocking check stops the steps downstream of it."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from arhn_assets.cli import pipeline_job
from arhn_assets.core import checks
from arhn_assets.core.embeddings import default_model_path, model_fingerprint
from arhn_assets.core.ingest import TRIPLETS_SCHEMA
from arhn_assets.core.lake import write_partition
from arhn_assets.core.refine import summary
from arhn_assets.core.triplet_formats import PASSAGES_SCHEMA
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.refine_data import CANDIDATES, RANKING, SNIPPETS


def test_schema_names_missing_unexpected_and_mistyped_columns():
    expected = {"query_id": pl.String, "score": pl.Float64, "rank": pl.Int64}
    good = pl.DataFrame({"rank": [1], "query_id": ["q"], "score": [0.5]})
    assert checks.schema(good, expected).passed
    bad = checks.schema(pl.DataFrame({"query_id": [1], "score": [0.5], "extra": ["x"]}), expected)
    assert not bad.passed
    assert bad.metadata["missing"] == ["rank"] and bad.metadata["unexpected"] == ["extra"]
    assert bad.metadata["wrong_types"] == {"query_id": "Int64 (expected String)"}


def test_an_empty_partition_fails():
    assert not checks.not_empty(pl.DataFrame({"a": []})).passed
    assert checks.not_empty(pl.DataFrame({"a": [1]})).passed


def test_references_name_the_decisions_of_unknown_queries_and_passages():
    decisions = pl.DataFrame({"config": ["R", "R", "F"], "query_id": ["q1", "q2", "q1"], "doc_id": ["d1", "d1", "d9"]})
    outcome = checks.references(decisions, pl.DataFrame({"query_id": ["q1"]}), pl.DataFrame({"doc_id": ["d1"]}))
    assert not outcome.passed and outcome.description.startswith("2 decisions")
    assert outcome.metadata["unknown_query_ids"] == 1 and outcome.metadata["unknown_doc_ids"] == 1
    assert sorted(outcome.metadata["examples"]["problem"]) == ["unknown doc_id", "unknown query_id"]


@pytest.mark.parametrize(
    ("statuses", "minimum", "passed"),
    [
        (["answer", "answer", "ungrounded", "no_answer"], 0.6, True),  # 2 of 3 answers grounded
        (["answer", "ungrounded", "ungrounded", "no_answer"], 0.5, False),
        (["no_answer", "invalid"], 0.9, True),  # nothing claimed to answer: nothing to ground
    ],
)
def test_groundedness_counts_answers_only(statuses, minimum, passed):
    assert checks.groundedness(pl.DataFrame({"status": statuses}), minimum).passed is passed


def test_invalid_ranking_rate():
    frame = pl.DataFrame({"status": ["ok", "ok", "ok", "wrong_format"]})
    assert checks.invalid_rankings(frame, 0.25).passed
    outcome = checks.invalid_rankings(frame, 0.2)
    assert not outcome.passed and "1 of 4 rankings invalid (25.0%" in outcome.description


def test_relabel_and_filter_rates_per_configuration():
    decisions = pl.DataFrame(
        {
            "dataset": "toy",
            "config": ["R"] * 4 + ["F"] * 4,
            "query_id": "q",
            "query_kept": True,
            "query_note": None,
            "original_label": ["positive", "negative", "negative", "negative"] * 2,
            "decision": [
                "keep_positive",
                "relabel_positive",
                "keep_negative",
                "keep_negative",
                "keep_positive",
                "filter_ambiguous",
                "filter_ambiguous",
                "keep_negative",
            ],
        },
        schema_overrides={"query_note": pl.String},
    )
    assert checks.relabel_rates(summary(decisions), 0.34, 0.67).passed
    outcome = checks.relabel_rates(summary(decisions), 0.34, 0.5)
    assert not outcome.passed and "F: relabel 0.0% filter 66.7%" in outcome.description


def test_models_loadable_runs_a_forward_pass_and_names_a_broken_model(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    trained = pl.DataFrame({"config": ["baseline", "R"], "model_path": [default_model_path(), str(broken)]})
    outcome = checks.models_loadable(trained)
    assert not outcome.passed and outcome.description.startswith(f"R: {broken}")
    assert outcome.metadata["dimensions"] == {"baseline": 384}
    assert checks.models_loadable(trained.head(1)).passed


def test_base_anchor_compares_only_like_with_like():
    fingerprint = model_fingerprint(default_model_path())
    scores = pl.DataFrame(
        {"config": ["base"], "metric": ["ndcg@10"], "eval_dataset": ["scifact"], "split": ["test"], "value": [0.6449]}
    )
    assert checks.base_anchor(scores, {"scifact": 300}, fingerprint).passed
    broken = checks.base_anchor(scores.with_columns(value=pl.lit(0.61)), {"scifact": 300}, fingerprint)
    assert not broken.passed and "0.6100 vs 0.6451" in broken.description
    # a cut of the test set, or another model, has no anchor: nothing to compare
    assert "no published anchor" in checks.base_anchor(scores, {"scifact": 12}, fingerprint).description
    assert checks.base_anchor(scores.with_columns(value=pl.lit(0.1)), {"scifact": 300}, "other@sha256:0").passed


@pytest.fixture
def judged_lake(tmp_path, monkeypatch):
    """The inputs of relabel_decisions for one query, written to a real lake."""
    home = tmp_path / "home"
    monkeypatch.setenv("ARHN_HOME", str(home))
    docs = CANDIDATES["doc_id"].to_list()
    frames = {
        "raw_triplets": pl.DataFrame(
            [("toy", "q", "what is n1", ["p"], [], None, None, None, "", "test", "toy.jsonl", 1)],
            schema=TRIPLETS_SCHEMA,
            orient="row",
        ),
        "raw_passages": pl.DataFrame(
            [("toy", d, "", f"passage {d}", "corpus") for d in docs], schema=PASSAGES_SCHEMA, orient="row"
        ),
        "mined_negatives": CANDIDATES,
        "answer_snippets": SNIPPETS.with_columns(snippet=pl.format("span of {}", "doc_id")),
        "answerability_rankings": RANKING,
    }
    for asset, frame in frames.items():
        write_partition(frame, home / "lake" / asset / "dataset=toy")
    return home


def run_refine(config: dict) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["toy"])
        job = pipeline_job(defs(), "key:relabel_decisions or key:refined_triplets")
        return job.execute_in_process(partition_key="toy", instance=instance, run_config=config, raise_on_error=False)


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def test_passing_checks_let_the_refined_triplets_through(judged_lake):
    result = run_refine({})
    assert result.success
    evaluations = check_results(result)
    assert all(e.passed for e in evaluations.values()), {k: e.description for k, e in evaluations.items()}
    assert {
        "relabel_decisions:relabel_rate",
        "relabel_decisions:decision_references",
        "refined_triplets:schema",
    } <= set(evaluations)
    assert "R: relabel 20.0%" in evaluations["relabel_decisions:relabel_rate"].description


def test_a_relabel_rate_out_of_bounds_blocks_what_comes_after(judged_lake):
    result = run_refine({"resources": {"quality_bounds": {"config": {"max_relabel_rate": 0.1}}}})
    assert not result.success
    rate = check_results(result)["relabel_decisions:relabel_rate"]
    assert not rate.passed and "R: relabel 20.0%" in rate.description and "relabel ≤ 10%" in rate.description
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"relabel_decisions"}, "refined_triplets must not run after a failed blocking check"


def test_a_decision_about_an_unknown_passage_blocks_what_comes_after(judged_lake):
    passages = pl.read_parquet(judged_lake / "lake" / "raw_passages" / "dataset=toy" / "part-0.parquet")
    write_partition(passages.filter(pl.col("doc_id") != "n5"), judged_lake / "lake" / "raw_passages" / "dataset=toy")
    result = run_refine({})
    assert not result.success
    references = check_results(result)["relabel_decisions:decision_references"]
    assert not references.passed and references.metadata["unknown_doc_ids"].value == 1
    assert not [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "refined_triplets"
    ]


def test_the_cli_names_a_failed_check_and_exits_non_zero(judged_lake, tmp_path, monkeypatch, capsys):
    from arhn_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    config = tmp_path / "strict.yaml"
    config.write_text("resources:\n  quality_bounds:\n    config:\n      max_relabel_rate: 0.1\n")
    code = main(
        [
            "run",
            "--dataset",
            "toy",
            "--config",
            str(config),
            "--select",
            "key:relabel_decisions or key:refined_triplets",
        ]
    )
    assert code == 1
    assert "arhn: check relabel_decisions:relabel_rate failed: out of bounds (relabel ≤ 10%" in capsys.readouterr().err
