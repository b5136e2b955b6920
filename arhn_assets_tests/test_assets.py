"""Real Dagster materializations of ingest and mining, through the project's own definitions,
writing a real Parquet lake that DuckDB reads."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb
import polars as pl
import pytest

from arhn_assets.cli import failure_message, pipeline_job
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.run_configs import sample

pytestmark = pytest.mark.all_cores

SCIFACT_QUERIES = 40
# These tests are about ingest and mining; the LLM stages have their own (test_llm_stages.py).
INGEST_AND_MINING = "group:ingest or group:mining"


def run_pipeline(
    instance: dg.DagsterInstance, dataset: str, run_config: dict | None = None
) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("dataset", [dataset])
    job = pipeline_job(defs(), INGEST_AND_MINING)
    return job.execute_in_process(
        partition_key=dataset, instance=instance, run_config=run_config or {}, raise_on_error=False
    )


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dg.AssetMaterialization:
    found = [
        m for m in result.asset_materializations_for_node(_node_of(asset)) if m.asset_key.to_user_string() == asset
    ]
    assert found, f"{asset} was not materialized"
    return found[-1]


def _node_of(asset: str) -> str:
    return "ingest_dataset" if asset.startswith("raw_") else asset


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.mark.slow
def test_scifact_partition_materializes_into_the_lake(lake_home, instance):
    config = {"resources": sample(SCIFACT_QUERIES)}
    result = run_pipeline(instance, "scifact", config)
    assert result.success

    triplets = materialization(result, "raw_triplets")
    assert triplets.metadata["dagster/row_count"].value == SCIFACT_QUERIES
    assert triplets.metadata["training_split"].value == "train"
    mined = materialization(result, "mined_negatives")
    for key in ("removed_by_filter", "scores", "preview", "encode_passages_per_second", "wall_seconds", "negatives"):
        assert key in mined.metadata
    assert mined.metadata["removed_by_filter"].value["relative_margin"] > 0

    lake = lake_home / "lake"
    counts = duckdb.sql(
        f"select source, count(*) as n, count(distinct query_id) as queries "
        f"from read_parquet('{lake}/mined_negatives/*/*.parquet', hive_partitioning=true) "
        f"where dataset = 'scifact' group by source order by source"
    ).fetchall()
    by_source = {source: (n, queries) for source, n, queries in counts}
    assert by_source["positive"][1] == SCIFACT_QUERIES
    assert by_source["mined"][1] >= SCIFACT_QUERIES - 2 and by_source["mined"][0] <= SCIFACT_QUERIES * 10
    passages = pl.read_parquet(lake / "raw_passages" / "dataset=scifact" / "part-0.parquet")
    assert passages.height == 5183

    # Re-materializing replaces the partition and encodes nothing: the embedding cache is warm.
    path = lake / "mined_negatives" / "dataset=scifact" / "part-0.parquet"
    before = pl.read_parquet(path)
    again = run_pipeline(instance, "scifact", config)
    assert again.success
    assert materialization(again, "mined_negatives").metadata["passages_encoded"].value == 0
    assert pl.read_parquet(path).equals(before)
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-0.parquet"]


@pytest.mark.slow
def test_landed_bge_file_keeps_its_negatives(lake_home, instance, shared_data):
    landing = lake_home / "landing" / "msmarco-sample"
    landing.mkdir(parents=True)
    shutil.copy(shared_data / "bge_examples" / "embedder_msmarco.jsonl", landing / "msmarco.jsonl")
    result = run_pipeline(instance, "msmarco-sample")
    assert result.success
    candidates = pl.read_parquet(lake_home / "lake" / "mined_negatives" / "dataset=msmarco-sample" / "part-0.parquet")
    counts = dict(candidates.group_by("source").len().iter_rows())
    assert counts == {"positive": 10, "provided": 250}  # 1 positive and 25 negatives per line, none mined
    assert candidates["score"].is_not_null().all()
    assert materialization(result, "raw_triplets").metadata["sources"].value == {"bge": 10}


def test_a_landed_file_without_valid_rows_fails_with_its_quarantine(lake_home, instance, shared_data):
    landing = lake_home / "landing" / "fiqa-rlhn"
    landing.mkdir(parents=True)
    shutil.copy(shared_data / "rlhn_llm_judgments" / "fiqa.stage_1.gpt-4o-mini.jsonl.gz", landing / "stage1.jsonl.gz")
    (landing / "broken.jsonl").write_text('{"query": "q", "pos": []}\nnot json\n')
    result = run_pipeline(instance, "fiqa-rlhn")
    assert not result.success
    assert "broken.jsonl" in failure_message(next(e for e in result.all_events if e.is_step_failure))
    quarantine = pl.read_parquet(
        lake_home / "lake" / "raw_triplets_quarantine" / "dataset=fiqa-rlhn" / "part-0.parquet"
    )
    assert set(quarantine.select("line", "field").iter_rows()) == {(1, "pos"), (2, "<line>")}
    assert quarantine["file"].str.ends_with("broken.jsonl").all()
    assert not (lake_home / "lake" / "raw_triplets" / "dataset=fiqa-rlhn").exists()


def test_hostile_partition_keys_never_reach_the_file_system(lake_home, instance):
    instance.add_dynamic_partitions("dataset", ["../escape"])
    job = pipeline_job(defs(), INGEST_AND_MINING)
    result = job.execute_in_process(partition_key="../escape", instance=instance, raise_on_error=False)
    assert not result.success
    assert "invalid dataset name" in failure_message(next(e for e in result.all_events if e.is_step_failure))
    assert not (lake_home.parent / "escape").exists()
    assert not list(lake_home.glob("lake/**/*.parquet"))


@pytest.mark.slow
def test_encoding_progress_reaches_the_run_log(tmp_path, shared_data, instance, monkeypatch):
    """A mining run that encodes (its own empty embedding cache) logs done/total, rate and ETA
    lines into the Dagster run's log, which the UI shows and `arhn run` prints."""
    home = tmp_path / "home"
    (home / "landing" / "msmarco-sample").mkdir(parents=True)
    shutil.copy(
        shared_data / "bge_examples" / "embedder_msmarco.jsonl", home / "landing" / "msmarco-sample" / "m.jsonl"
    )
    monkeypatch.setenv("ARHN_HOME", str(home))
    monkeypatch.setenv("ARHN_DATA_DIR", str(shared_data))
    result = run_pipeline(instance, "msmarco-sample")
    assert result.success
    lines = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.step_key == "mined_negatives"]
    encoded = materialization(result, "mined_negatives").metadata["passages_encoded"].value
    progress = [line for line in lines if line.startswith("encode documents: ")]
    assert progress[0].startswith(f"encode documents: 0/{encoded} (0%)")
    assert progress[-1].startswith(f"encode documents: {encoded}/{encoded} (100%)") and "documents/s" in progress[-1]
