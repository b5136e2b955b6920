"""The dbt project builds the warehouse from a lake written by a real materialization."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from arhn_assets.cli import pipeline_job
from arhn_assets.definitions import defs

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt"


def test_dbt_build_reads_the_lake_into_the_warehouse(lake_home, shared_data, tmp_path):
    landing = lake_home / "landing" / "msmarco-sample"
    landing.mkdir(parents=True)
    shutil.copy(shared_data / "bge_examples" / "embedder_msmarco.jsonl", landing / "msmarco.jsonl")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["msmarco-sample"])
        job = pipeline_job(defs(), "group:ingest or group:mining")
        assert job.execute_in_process(partition_key="msmarco-sample", instance=instance).success

    dbt = Path(sys.executable).parent / "dbt"
    build = subprocess.run(
        [str(dbt), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
        env={**os.environ, "ARHN_HOME": str(lake_home)}, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:]

    lake = {
        table: pl.read_parquet(lake_home / "lake" / table / "dataset=msmarco-sample" / "part-0.parquet").height
        for table in ("raw_triplets", "raw_passages", "raw_triplets_quarantine", "mined_negatives")
    }
    with duckdb.connect(str(lake_home / "warehouse.duckdb"), read_only=True) as warehouse:
        for table, rows in lake.items():
            assert warehouse.execute(f"select count(*) from stg_{table} where dataset = 'msmarco-sample'").fetchone()[0] == rows
