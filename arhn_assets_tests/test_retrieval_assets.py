"""The whole pipeline, ingest to report, on a small BEIR folder cut from SciFact: real mining,
real LLM stages (capped), real fine-tuning and real pytrec_eval scoring, through Dagster."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from arhn_assets.cli import pipeline_job
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.run_configs import make_run_ranking, smollm2_resources
from arhn_assets_tests.helpers.warehouse import assert_warehouse_matches_lake

pytestmark = [pytest.mark.slow, pytest.mark.all_cores]  # the whole pipeline, training and evaluation


def cut_scifact(
    source: Path, target: Path, train_queries: int = 6, test_queries: int = 12, other_passages: int = 150
) -> None:
    """A BEIR folder with the first queries of each split, their positives and some other passages."""
    qrels = {
        split: pl.read_csv(
            source / "qrels" / f"{split}.tsv",
            separator="\t",
            schema_overrides={"query-id": pl.String, "corpus-id": pl.String},
        )
        for split in ("train", "test")
    }
    qrels["train"] = qrels["train"].filter(
        pl.col("query-id").is_in(qrels["train"]["query-id"].unique(maintain_order=True).head(train_queries).implode())
    )
    qrels["test"] = qrels["test"].filter(
        pl.col("query-id").is_in(qrels["test"]["query-id"].unique(maintain_order=True).head(test_queries).implode())
    )
    keep_docs = set(qrels["train"]["corpus-id"]) | set(qrels["test"]["corpus-id"])
    keep_queries = set(qrels["train"]["query-id"]) | set(qrels["test"]["query-id"])
    (target / "qrels").mkdir(parents=True)
    for split, frame in qrels.items():
        frame.write_csv(target / "qrels" / f"{split}.tsv", separator="\t")
    with gzip.open(source / "corpus.jsonl.gz", "rt") as corpus, open(target / "corpus.jsonl", "w") as out:
        others = 0
        for line in corpus:
            doc_id = json.loads(line)["_id"]
            if doc_id in keep_docs or others < other_passages:
                others += doc_id not in keep_docs
                out.write(line)
    with open(source / "queries.jsonl") as queries, open(target / "queries.jsonl", "w") as out:
        out.writelines(line for line in queries if json.loads(line)["_id"] in keep_queries)


@pytest.fixture
def scifact_slice(lake_home, shared_data, tmp_path, monkeypatch) -> Path:
    data_dir = tmp_path / "datasets"
    cut_scifact(shared_data / "scifact", data_dir / "scislice")
    monkeypatch.setenv("ARHN_DATA_DIR", str(data_dir))
    return lake_home


def test_pipeline_trains_every_configuration_and_reports_beir_scores(scifact_slice):
    home = scifact_slice
    config = {
        "ops": {
            "relabel_decisions": {"config": {"configs": ["baseline", "R"]}},
            "trained_retriever": {"config": {"batch_size": 4, "max_steps": 2, "learning_rate": 1e-4}},
            **make_run_ranking(),
        },
        "resources": smollm2_resources(queries=2),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["scislice"])
        result = pipeline_job(defs()).execute_in_process(partition_key="scislice", instance=instance, run_config=config)
        assert result.success
        logged = [e.user_message for e in instance.all_logs(result.run_id) if e.step_key == "trained_retriever"]
        assert any(line.startswith("train: 2/2 (100%)") and "steps/s" in line for line in logged)
    # every asset check of the job's assets ran and passed (the base-model anchor has none for a slice)
    evaluations = {e.asset_check_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    job_assets = pipeline_job(defs()).asset_layer.selected_asset_keys
    assert set(evaluations) == {
        k.to_user_string() for k in defs().resolve_asset_graph().asset_check_keys if k.asset_key in job_assets
    }
    assert [key for key, e in evaluations.items() if not e.passed] == []
    assert "no published anchor" in evaluations["beir_scores:base_model_anchor"].description
    lake = home / "lake"
    trained = pl.read_parquet(lake / "trained_retriever" / "dataset=scislice" / "part-0.parquet")
    assert sorted(trained["config"]) == ["R", "baseline"] and (trained["steps"] == 2).all()
    for path in trained["model_path"]:
        assert (Path(path) / "model.safetensors").exists() and (Path(path) / "arhn_training.json").exists()
        assert Path(path).is_relative_to(home / "models" / "scislice")

    scores = pl.read_parquet(lake / "beir_scores" / "dataset=scislice" / "part-0.parquet")
    assert set(scores["config"]) == {"base", "baseline", "R"}
    assert set(scores["metric"]) == {"ndcg@10", "recall@100", "map@100", "mrr@10"}
    assert set(scores["split"]) == {"test"} and set(scores["eval_dataset"]) == {"scislice"}
    assert scores.filter(pl.col("metric") == "ndcg@10")["value"].min() > 0.3
    per_query = pl.read_parquet(lake / "beir_query_scores" / "dataset=scislice" / "part-0.parquet")
    assert per_query["query_id"].n_unique() == 12 and per_query.height == 3 * 12 * 4

    report = pl.read_parquet(lake / "retrieval_report" / "dataset=scislice" / "part-0.parquet")
    assert report.filter(pl.col("config") == "R")["p_ttest"].is_not_null().all()
    assert report.filter(pl.col("config") == "baseline")["delta"].is_null().all()
    folder = home / "reports" / "scislice"
    assert "| R |" in (folder / "report.md").read_text()
    assert (folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metadata = result.asset_materializations_for_node("retrieval_report")[0].metadata
    assert "data:image/png;base64," in metadata["report"].value

    # The job's dbt assets built the warehouse over this lake: every mart against the lake
    # tables, computed with polars.
    assert_warehouse_matches_lake(home, "scislice")


def test_landed_only_datasets_need_an_evaluation_dataset(msmarco_sample):
    from arhn_assets.cli import failure_message
    from arhn_assets.core.ingest import TRIPLETS_SCHEMA
    from arhn_assets.core.lake import write_partition
    from arhn_assets.core.training import TRAINED_SCHEMA

    lake = msmarco_sample / "lake"
    write_partition(pl.DataFrame(schema=TRAINED_SCHEMA), lake / "trained_retriever" / "dataset=msmarco-sample")
    write_partition(pl.DataFrame(schema=TRIPLETS_SCHEMA), lake / "raw_triplets" / "dataset=msmarco-sample")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["msmarco-sample"])
        job = pipeline_job(defs(), "key:beir_scores or key:beir_query_scores")
        result = job.execute_in_process(partition_key="msmarco-sample", instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "has no BEIR folder with qrels/test.tsv" in failure_message(failure)
    assert "set eval_datasets, e.g. ['scifact']" in failure_message(failure)
