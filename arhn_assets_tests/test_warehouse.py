"""The dbt models as Dagster assets: lineage from the lake, and a warehouse that readers never
lock the build out of."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from arhn_assets.cli import main as arhn
from arhn_assets.cli import pipeline_job
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.run_configs import smollm2_resources
from arhn_assets_tests.helpers.warehouse import LAKE_TABLES, MARTS, SERVED_TABLES

pytestmark = pytest.mark.all_cores

STAGING = "key:stg_raw_triplets or key:stg_mined_negatives"
# A user's DuckDB shell on the warehouse: opened read-write, as `duckdb warehouse.duckdb` does,
# holding the file (and DuckDB's write lock) until told to go.
SHELL = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print(con.execute("select count(*) from stg_raw_triplets").fetchone()[0], flush=True)
    sys.stdin.readline()
    print(con.execute("select count(*) from stg_raw_triplets").fetchone()[0], flush=True)
""")


def test_dbt_sources_are_the_lake_assets():
    graph = defs().resolve_asset_graph()
    staging = graph.get(dg.AssetKey("stg_mined_negatives"))
    assert staging.group_name == "warehouse" and staging.partitions_def.name == "dataset"
    for table in LAKE_TABLES:  # every contract's lake table is the source of its staging model
        assert dg.AssetKey(table) in graph.get(dg.AssetKey(f"stg_{table}")).parent_keys, table
    for mart in MARTS:
        assert graph.has(dg.AssetKey(mart)), mart
    for mart, table in SERVED_TABLES.items():  # the marts that serve a lake table as it is
        assert graph.get(dg.AssetKey(mart)).parent_keys == {dg.AssetKey(f"stg_{table}")}, mart


@pytest.fixture
def landed_lake(lake_home, shared_data):
    landing = lake_home / "landing" / "msmarco-sample"
    landing.mkdir(parents=True)
    shutil.copy(shared_data / "bge_examples" / "embedder_msmarco.jsonl", landing / "msmarco.jsonl")
    return lake_home


@pytest.mark.slow
def test_a_reader_holding_the_warehouse_never_fails_a_build(landed_lake):
    warehouse = landed_lake / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["msmarco-sample"])
        first = pipeline_job(defs(), f"group:ingest or group:mining or {STAGING}").execute_in_process(
            partition_key="msmarco-sample", instance=instance, raise_on_error=False
        )
        assert first.success
        with duckdb.connect(str(warehouse), read_only=True) as reader:
            queries = reader.execute("select count(*) from stg_raw_triplets").fetchone()[0]
        assert queries > 0

        shell = subprocess.Popen(
            [sys.executable, "-c", SHELL, str(warehouse)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert int(shell.stdout.readline()) == queries  # the shell holds the file now
            with pytest.raises(duckdb.IOException, match="lock"):
                duckdb.connect(str(warehouse))  # what a dbt build in place would meet
            # a Python asset and the dbt models, in one run, while the shell holds the warehouse
            again = pipeline_job(defs(), f"key:mined_negatives or {STAGING}").execute_in_process(
                partition_key="msmarco-sample", instance=instance, raise_on_error=False
            )
            assert again.success, [e.message for e in again.all_events if e.is_step_failure]
            shell.stdin.write("\n")
            shell.stdin.flush()
            assert int(shell.stdout.readline()) == queries, "the shell still reads its version"
            assert shell.wait(timeout=60) == 0
        finally:
            shell.kill()
    assert not list(landed_lake.glob(".warehouse.*")), "no build file is left behind"
    with duckdb.connect(str(warehouse), read_only=True) as reader:
        assert reader.execute("select count(*) from stg_mined_negatives").fetchone()[0] > 0


JUDGE_SELECTION = "group:ingest or group:mining or group:llm or group:refine"
GPU_STEPS = {"answer_snippets", "answerability_rankings"}
# What SQLite (Dagster's storage, the call cache) and DuckDB say when a lock is refused.
LOCK_ERRORS = re.compile(r"database is locked|could not set lock|conflicting lock", re.IGNORECASE)


def land_tiny_dataset(home: Path, dataset: str) -> None:
    rows = [
        {
            "query": f"{dataset}: what makes bread rise",
            "pos": ["Yeast makes bread rise by releasing carbon dioxide."],
            "neg": ["Salt adds flavour to bread.", "Ovens bake bread at 220 degrees.", f"{dataset} is a dataset name."],
        },
        {
            "query": f"{dataset}: why is the sky blue",
            "pos": ["Rayleigh scattering makes the sky look blue."],
            "neg": ["The sea is salty.", "Clouds are made of droplets.", f"{dataset} has two queries."],
        },
    ]
    (home / "landing" / dataset).mkdir(parents=True)
    (home / "landing" / dataset / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_two_partitions_a_dbt_build_and_a_reader_at_once(lake_home, tmp_path, monkeypatch, capsys):
    """Two `arhn run`s judge two partitions while a third rebuilds the warehouse and a reader
    queries it, all on one Dagster instance, one LLM call cache and one model cache. Every run
    succeeds, no lock error is met, and the gpu pool (limit 1) runs the four LLM steps one at a time."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", dagster_home)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    for dataset in ("seed", "part-a", "part-b"):
        land_tiny_dataset(lake_home, dataset)
    assert arhn(["run", "--dataset", "seed", "--select", f"group:ingest or group:mining or {STAGING}"]) == 0
    out = capsys.readouterr().out  # the compact output: dbt's echo went to the DEBUG log, the step's line stayed
    assert "START sql view model" not in out and "Running with dbt=" not in out
    assert re.search(r"warehouse_models: done in .*: 2 assets materialized", out), out
    config = tmp_path / "judge.yaml"
    config.write_text(yaml.safe_dump({"resources": smollm2_resources(batch_size=4)}))

    commands = {
        "part-a": ["--dataset", "part-a", "--config", str(config), "--select", JUDGE_SELECTION],
        "part-b": ["--dataset", "part-b", "--config", str(config), "--select", JUDGE_SELECTION],
        "warehouse": ["--dataset", "seed", "--select", STAGING],
    }
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    runs = {}
    for name, args in commands.items():
        with logs[name].open("w") as log:  # the child keeps its own copy of the descriptor
            runs[name] = subprocess.Popen(
                [sys.executable, "-m", "arhn_assets.cli", "run", *args], stdout=log, stderr=subprocess.STDOUT
            )
    # The staging models are views over the lake, so readers count the partitions as they land:
    # seed's 2 queries, then 4, then 6, never a half-written file.
    held_counts: list[int] = []
    fresh_counts: list[int] = []
    with duckdb.connect(str(lake_home / "warehouse.duckdb"), read_only=True) as held:
        while any(run.poll() is None for run in runs.values()):
            held_counts.append(held.execute("select count(*) from stg_raw_triplets").fetchone()[0])
            with duckdb.connect(str(lake_home / "warehouse.duckdb"), read_only=True) as fresh:
                fresh_counts.append(fresh.execute("select count(*) from stg_raw_triplets").fetchone()[0])
            time.sleep(0.5)
    for name, run in runs.items():
        output = logs[name].read_text()
        assert run.returncode == 0, output[-3000:]
        assert not LOCK_ERRORS.search(output), output[-3000:]
    for counts in (held_counts, fresh_counts):
        assert len(counts) > 10 and counts == sorted(counts) and set(counts) <= {2, 4, 6} and counts[-1] == 6

    lake = lake_home / "lake"
    for dataset in ("part-a", "part-b"):
        snippets = pl.read_parquet(lake / "answer_snippets" / f"dataset={dataset}" / "part-0.parquet")
        assert snippets.height == 8 and snippets["dataset"].to_list() == [dataset] * 8
        assert (lake / "refined_triplets" / f"dataset={dataset}" / "part-0.parquet").exists()
    gpu_steps = []  # (start, end) of every step of the gpu pool, in both judging runs
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            started: dict[str, float] = {}
            for event in instance.all_logs(run.run_id):
                if event.step_key not in GPU_STEPS:
                    continue
                if event.dagster_event_type == dg.DagsterEventType.STEP_START:
                    started[event.step_key] = event.timestamp
                elif event.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS:
                    gpu_steps.append((started[event.step_key], event.timestamp))
    gpu_steps.sort()
    assert len(gpu_steps) == 4
    for (_, end), (next_start, _) in zip(gpu_steps, gpu_steps[1:]):
        assert next_start >= end, "the gpu pool runs one LLM step at a time"
