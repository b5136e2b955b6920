"""The dbt models as Dagster assets: lineage from the lake, and a warehouse that readers never
lock the build out of."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import dagster as dg
import duckdb
import pytest

from arhn_assets.cli import pipeline_job
from arhn_assets.definitions import defs

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
    assert dg.AssetKey("mined_negatives") in staging.parent_keys
    assert staging.group_name == "warehouse" and staging.partitions_def.name == "dataset"
    for mart in ("relabel_decisions_explained", "relabel_summary", "false_negative_candidates", "llm_calls_summary", "beir_leaderboard"):
        assert graph.has(dg.AssetKey(mart)), mart


@pytest.fixture
def landed_lake(lake_home, shared_data):
    landing = lake_home / "landing" / "msmarco-sample"
    landing.mkdir(parents=True)
    shutil.copy(shared_data / "bge_examples" / "embedder_msmarco.jsonl", landing / "msmarco.jsonl")
    return lake_home


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

        shell = subprocess.Popen([sys.executable, "-c", SHELL, str(warehouse)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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
