"""The warehouse as the tests read it: `dbt build` as the CLI runs it, the lake tables and what
dbt declares of them, and `assert_warehouse_matches_lake`, every mart against the lake.

The lake's tables are the contracts of arhn_assets/core/contracts.py: the pipeline job writes all
of them but the judge audit's, which runs apart from it (test_audit.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import yaml

from arhn_assets.core.contracts import TABLES

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt"
LAKE_TABLES = tuple(table.asset for table in TABLES)
AUDIT_TABLES = ("judge_audit", "judge_audit_scores")  # written by the judge audit, which the pipeline job does not run
PIPELINE_TABLES = tuple(table for table in LAKE_TABLES if table not in AUDIT_TABLES)
MARTS = (
    "relabel_decisions_explained",
    "relabel_summary",
    "false_negative_candidates",
    "llm_calls_summary",
    "beir_leaderboard",
    "judge_agreement",
)
# The marts that serve a lake table as it is: each of these metrics is computed once, in Python.
SERVED_TABLES = {"relabel_summary": "refine_summary", "judge_agreement": "judge_audit_scores"}


def run_dbt_build(home: Path, scratch: Path, *args: str) -> subprocess.CompletedProcess:
    """`dbt build` of the warehouse at <home>/warehouse.duckdb from <home>/lake, as the CLI runs it."""
    env = {**os.environ, "ARHN_HOME": str(home)}
    env.pop("ARHN_WAREHOUSE_PATH", None)
    dbt = Path(sys.executable).parent / "dbt"
    build = subprocess.run(
        [
            str(dbt),
            "build",
            "--project-dir",
            str(DBT_DIR),
            "--profiles-dir",
            str(DBT_DIR),
            "--target-path",
            str(scratch / "dbt-target"),
            "--log-path",
            str(scratch / "dbt-logs"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-5000:]
    return build


def declared_lake_columns() -> dict[str, dict[str, str]]:
    """{table: {column: DuckDB type}} as dbt/models/staging/sources.yml declares the lake."""
    sources = yaml.safe_load((DBT_DIR / "models" / "staging" / "sources.yml").read_text())["sources"]
    [lake] = [s for s in sources if s["name"] == "lake"]
    return {t["name"]: {c["name"]: c["data_type"].upper() for c in t.get("columns", [])} for t in lake["tables"]}


def lake_path(home: Path, table: str, dataset: str) -> Path:
    return home / "lake" / table / f"dataset={dataset}" / "part-0.parquet"


def read_lake(home: Path, table: str, dataset: str) -> pl.DataFrame:
    return pl.read_parquet(lake_path(home, table, dataset))


def stg_columns(warehouse: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {name: dtype.upper() for name, dtype, *_ in warehouse.execute(f"describe stg_{table}").fetchall()}


def count(warehouse: duckdb.DuckDBPyConnection, sql: str) -> int:
    return warehouse.execute(sql).fetchall()[0][0]


def frame(warehouse: duckdb.DuckDBPyConnection, sql: str, *params) -> pl.DataFrame:
    return warehouse.sql(sql, params=list(params)).pl()


def assert_serves(
    warehouse: duckdb.DuckDBPyConnection, mart: str, table: pl.DataFrame, dataset: str, key: list[str]
) -> None:
    """The mart's rows for `dataset` are the lake table's, column for column and value for value."""
    got = frame(warehouse, f"select * from {mart} where dataset = ?", dataset)
    assert sorted(got.columns) == sorted(table.columns), mart
    assert got.height == table.height, mart
    assert got.select(table.columns).sort(key).equals(table.sort(key)), mart


def assert_warehouse_matches_lake(home: Path, dataset: str) -> None:
    """Every mart of <home>/warehouse.duckdb, for `dataset`, against the lake computed with polars.

    Every pipeline table must be in the lake; the audit's are checked where they are."""
    lake = {table: read_lake(home, table, dataset) for table in PIPELINE_TABLES}
    lake |= {
        table: read_lake(home, table, dataset) for table in AUDIT_TABLES if lake_path(home, table, dataset).exists()
    }
    declared = declared_lake_columns()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as warehouse:
        for table in LAKE_TABLES:
            # the declared columns are the lake's: a missing table reads as this same shape
            assert stg_columns(warehouse, table) == declared[table], table
            rows = lake[table].height if table in lake else 0
            assert count(warehouse, f"select count(*) from stg_{table} where dataset = '{dataset}'") == rows, table

        decisions = lake["relabel_decisions"]
        snippets = lake["answer_snippets"]
        triplets, passages = lake["raw_triplets"], lake["raw_passages"]

        # relabel_decisions_explained: every decision once, with its query, passage and snippet texts
        explained = frame(warehouse, "select * from relabel_decisions_explained where dataset = ?", dataset)
        assert explained.height == decisions.height
        key = ["config", "query_id", "doc_id"]
        expected = (
            decisions.join(triplets.select("query_id", "query_text"), on="query_id", how="left")
            .join(passages.select("doc_id", "title", passage_text="text"), on="doc_id", how="left")
            .join(snippets.select("query_id", "doc_id", "snippet"), on=["query_id", "doc_id"], how="left")
        )
        columns = [
            *key,
            "original_label",
            "decision",
            "snippet_status",
            "llm_rank",
            "positive_rank",
            "ranking_status",
            "query_kept",
            "query_note",
            "query_text",
            "title",
            "passage_text",
            "snippet",
        ]
        assert explained.select(columns).sort(key).equals(expected.select(columns).sort(key))
        assert explained["query_text"].null_count() == 0 and explained["passage_text"].null_count() == 0

        # relabel_summary: the lake's refine_summary as it is (core/refine.py summary() computes it
        # once), one row per configuration of the decisions, its counts those of the decisions
        refine_summary = lake["refine_summary"]
        assert_serves(warehouse, "relabel_summary", refine_summary, dataset, ["config"])
        assert sorted(refine_summary["config"]) == sorted(decisions["config"].unique())
        decision, label = pl.col("decision"), pl.col("original_label")
        counts = {
            "candidates": pl.len(),
            "negatives": (label == "negative").sum(),
            "relabeled": (decision == "relabel_positive").sum(),
            "filtered": (decision == "filter_ambiguous").sum(),
            "kept_negatives": (decision == "keep_negative").sum(),
        }
        per_config = (
            decisions.group_by("config").agg(**{name: n.cast(pl.Int64) for name, n in counts.items()}).sort("config")
        )
        figures = refine_summary.sort("config")
        assert figures.select(per_config.columns).equals(per_config)
        for rate, part in (("relabel_rate", "relabeled"), ("filter_rate", "filtered")):
            for value, n, negatives in figures.select(rate, part, "negatives").iter_rows():
                assert math.isclose(value, n / negatives) if negatives else math.isnan(value), rate

        # judge_agreement: the lake's judge_audit_scores as they are (core/audit/scoring.py
        # audit_scores() computes them once), where the audit ran for this dataset
        if "judge_audit_scores" in lake:
            assert_serves(
                warehouse, "judge_agreement", lake["judge_audit_scores"], dataset, ["judge", "config", "rank_bucket"]
            )
        else:
            assert count(warehouse, f"select count(*) from judge_agreement where dataset = '{dataset}'") == 0

        # false_negative_candidates: answered negatives ranked above the positive, once per passage
        want_fn = (
            decisions.filter(
                (pl.col("original_label") == "negative")
                & (pl.col("snippet_status") == "answer")
                & (pl.col("llm_rank") < pl.col("positive_rank"))
            )
            .unique(["query_id", "doc_id"])
            .select("query_id", "doc_id", "llm_rank", "positive_rank")
        )
        got_fn = frame(
            warehouse, "select * from false_negative_candidates where dataset = ? order by confidence_rank", dataset
        )
        assert got_fn.height == want_fn.height
        assert got_fn.select(want_fn.columns).sort("query_id", "doc_id").equals(want_fn.sort("query_id", "doc_id"))
        margins = got_fn["rank_margin"].to_list()
        assert margins == sorted(margins, reverse=True)
        assert got_fn["snippet"].null_count() == 0 and got_fn["query_text"].null_count() == 0

        # llm_calls_summary: one call per row of each stage's table, its cache hits, tokens and statuses
        calls = frame(warehouse, "select * from llm_calls_summary where dataset = ?", dataset)
        rankings = lake["answerability_rankings"]
        for stage, table in (("answer_snippets", snippets), ("answerability_rankings", rankings)):
            rows = calls.filter(pl.col("stage") == stage)
            assert rows["calls"].sum() == table.height, stage
            assert sorted(rows["model"].to_list()) == sorted(table["model"].unique().to_list()), stage
            statuses = dict(table.group_by("status").len().iter_rows())
            for status, n in statuses.items():
                assert rows[f"status_{status}"].sum() == n, (stage, status)
            assert {k: v for counts in rows["status_counts"] for k, v in counts.items()} == statuses
        snippet_calls = calls.filter(pl.col("stage") == "answer_snippets")
        if "cached" in snippets.columns:  # older partitions lack it: null cache hits
            assert snippet_calls["cache_hits"].sum() == snippets["cached"].sum()
        else:
            assert snippet_calls["cache_hits"].is_null().all()
        assert snippet_calls["prompt_tokens"].sum() == snippets["prompt_tokens"].sum()
        assert snippet_calls["completion_tokens"].sum() == snippets["completion_tokens"].sum()
        ranking_calls = calls.filter(pl.col("stage") == "answerability_rankings")
        assert ranking_calls["cache_hits"].is_null().all() and ranking_calls["prompt_tokens"].is_null().all()
        assert ranking_calls["ranking_windows"].sum() == rankings["windows"].sum()

        # beir_leaderboard: every score, its delta against the same metric's baseline, its rank
        scores = lake["beir_scores"]
        board = frame(warehouse, "select * from beir_leaderboard where dataset = ?", dataset)
        assert board.height == scores.height
        where = ["eval_dataset", "split", "metric"]
        baseline = scores.filter(pl.col("config") == "baseline").select(*where, baseline=pl.col("value"))
        checked = board.join(baseline, on=where, how="left")
        assert checked.filter(pl.col("config") == "baseline")["delta"].is_null().all()
        others = checked.filter(pl.col("config") != "baseline")
        assert others.height > 0 and others["delta"].null_count() == 0
        assert all(
            math.isclose(d, v - b, abs_tol=1e-12) for d, v, b in others.select("delta", "value", "baseline").iter_rows()
        )
        best = board.filter(pl.col("rank") == 1).join(scores.group_by(where).agg(best=pl.col("value").max()), on=where)
        assert (best["value"] == best["best"]).all() and best.select(where).n_unique() == scores.select(
            where
        ).n_unique()
