"""The dbt project builds the warehouse from a lake written by a real materialization.

`assert_warehouse_matches_lake` is also run at the end of the whole-pipeline test
(test_retrieval_assets.py), where every lake table exists, so the costly pipeline runs once.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import yaml

from arhn_assets.cli import pipeline_job
from arhn_assets.definitions import defs

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt"
PIPELINE_TABLES = (
    "raw_triplets", "raw_passages", "raw_triplets_quarantine", "mined_negatives", "answer_snippets",
    "answerability_rankings", "relabel_decisions", "refined_triplets", "trained_retriever",
    "beir_scores", "beir_query_scores", "retrieval_report",
)
LAKE_TABLES = (*PIPELINE_TABLES, "judge_audit")  # the judge audit runs apart from the pipeline (test_audit.py)
MARTS = ("relabel_decisions_explained", "relabel_summary", "false_negative_candidates", "llm_calls_summary", "beir_leaderboard", "judge_agreement")
DUCKDB_TYPES = {pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Float64: "DOUBLE", pl.Boolean: "BOOLEAN"}


def run_dbt_build(home: Path, scratch: Path, *args: str) -> subprocess.CompletedProcess:
    """`dbt build` of the warehouse at <home>/warehouse.duckdb from <home>/lake, as the CLI runs it."""
    env = {**os.environ, "ARHN_HOME": str(home)}
    env.pop("ARHN_WAREHOUSE_PATH", None)
    dbt = Path(sys.executable).parent / "dbt"
    build = subprocess.run(
        [str(dbt), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
         "--target-path", str(scratch / "dbt-target"), "--log-path", str(scratch / "dbt-logs"), *args],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout[-5000:]
    return build


def declared_lake_columns() -> dict[str, dict[str, str]]:
    """{table: {column: DuckDB type}} as dbt/models/staging/sources.yml declares the lake."""
    sources = yaml.safe_load((DBT_DIR / "models" / "staging" / "sources.yml").read_text())["sources"]
    [lake] = [s for s in sources if s["name"] == "lake"]
    return {t["name"]: {c["name"]: c["data_type"].upper() for c in t.get("columns", [])} for t in lake["tables"]}


def duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.List):
        return duckdb_type(dtype.inner) + "[]"
    return DUCKDB_TYPES[dtype.base_type()]


def test_sources_declare_the_python_schemas():
    """The declared lake columns (the empty relation a missing table reads as) are the assets' schemas."""
    # The schemas the asset checks hold every table to (one list of them, in defs/checks.py).
    from arhn_assets.defs.checks import TABLES

    schemas = {table: schema for table, schema, *_ in TABLES}
    declared = declared_lake_columns()
    assert sorted(declared) == sorted(LAKE_TABLES)
    for table, schema in schemas.items():
        assert declared[table] == {name: duckdb_type(dtype) for name, dtype in schema.items()}, table


def test_dbt_build_reads_the_lake_into_the_warehouse(lake_home, shared_data, tmp_path):
    landing = lake_home / "landing" / "msmarco-sample"
    landing.mkdir(parents=True)
    shutil.copy(shared_data / "bge_examples" / "embedder_msmarco.jsonl", landing / "msmarco.jsonl")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["msmarco-sample"])
        job = pipeline_job(defs(), "group:ingest or group:mining")
        assert job.execute_in_process(partition_key="msmarco-sample", instance=instance).success

    # A plain build on a partly materialized lake: the tables not written yet read as empty.
    build = run_dbt_build(lake_home, tmp_path)
    assert "lake table relabel_decisions has no file" in build.stdout

    written = ("raw_triplets", "raw_passages", "raw_triplets_quarantine", "mined_negatives")
    lake = {table: read_lake(lake_home, table, "msmarco-sample") for table in written}
    declared = declared_lake_columns()
    with duckdb.connect(str(lake_home / "warehouse.duckdb"), read_only=True) as warehouse:
        for table in LAKE_TABLES:
            # the empty stand-ins have the lake's columns, so the marts compile against either
            assert stg_columns(warehouse, table) == declared[table], table
        for table, frame in lake.items():
            assert count(warehouse, f"select count(*) from stg_{table} where dataset = 'msmarco-sample'") == frame.height
        for mart in MARTS:
            assert count(warehouse, f"select count(*) from {mart}") == 0, mart


def read_lake(home: Path, table: str, dataset: str) -> pl.DataFrame:
    return pl.read_parquet(home / "lake" / table / f"dataset={dataset}" / "part-0.parquet")


def stg_columns(warehouse: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {name: dtype.upper() for name, dtype, *_ in warehouse.execute(f"describe stg_{table}").fetchall()}


def count(warehouse: duckdb.DuckDBPyConnection, sql: str) -> int:
    return warehouse.execute(sql).fetchall()[0][0]


def frame(warehouse: duckdb.DuckDBPyConnection, sql: str, *params) -> pl.DataFrame:
    return warehouse.sql(sql, params=list(params)).pl()


def assert_warehouse_matches_lake(home: Path, dataset: str) -> None:
    """Every mart of <home>/warehouse.duckdb, for `dataset`, against the lake computed with polars."""
    from arhn_assets.core.refine import summary

    lake = {table: read_lake(home, table, dataset) for table in PIPELINE_TABLES}
    declared = declared_lake_columns()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as warehouse:
        for table, rows in lake.items():
            # the declared columns are the lake's: a missing table reads as this same shape
            assert stg_columns(warehouse, table) == declared[table], table
            assert count(warehouse, f"select count(*) from stg_{table} where dataset = '{dataset}'") == rows.height, table

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
        columns = [*key, "original_label", "decision", "snippet_status", "llm_rank", "positive_rank", "ranking_status",
                   "query_kept", "query_note", "query_text", "title", "passage_text", "snippet"]
        assert explained.select(columns).sort(key).equals(expected.select(columns).sort(key))
        assert explained["query_text"].null_count() == 0 and explained["passage_text"].null_count() == 0

        # relabel_summary: the counts and rates core/refine.py's summary() computes from the same decisions
        got = frame(warehouse, "select * from relabel_summary where dataset = ? order by config", dataset)
        want = summary(decisions).sort("config")
        assert got["config"].to_list() == want["config"].to_list()
        for column in ("queries", "queries_kept", "invalid_rankings", "left_without_negatives", "backfilled",
                       "negatives", "relabeled", "filtered"):
            assert got[column].to_list() == want[column].cast(pl.Int64).to_list(), column
        for column in ("relabel_rate", "filter_rate"):
            assert all(math.isclose(a, b) for a, b in zip(got[column], want[column], strict=True)), column
        per_config = decisions.group_by("config").agg(
            candidates=pl.len(), kept_negatives=(pl.col("decision") == "keep_negative").sum().cast(pl.Int64)
        ).sort("config")
        assert got.select("candidates", "kept_negatives").equals(per_config.select("candidates", "kept_negatives").cast(pl.Int64))

        # false_negative_candidates: answered negatives ranked above the positive, once per passage
        want_fn = (
            decisions.filter(
                (pl.col("original_label") == "negative") & (pl.col("snippet_status") == "answer")
                & (pl.col("llm_rank") < pl.col("positive_rank"))
            )
            .unique(["query_id", "doc_id"])
            .select("query_id", "doc_id", "llm_rank", "positive_rank")
        )
        got_fn = frame(warehouse, "select * from false_negative_candidates where dataset = ? order by confidence_rank", dataset)
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
        assert all(math.isclose(d, v - b, abs_tol=1e-12) for d, v, b in others.select("delta", "value", "baseline").iter_rows())
        best = board.filter(pl.col("rank") == 1).join(
            scores.group_by(where).agg(best=pl.col("value").max()), on=where
        )
        assert (best["value"] == best["best"]).all() and best.select(where).n_unique() == scores.select(where).n_unique()


def write_toy_lake(home: Path, dataset: str, drop_cached: bool = False) -> None:
    """A small lake for `dataset` with every table, its decisions made by core/refine.py from
    hand-set snippets and rankings (so some negatives are relabeled, filtered, kept)."""
    from arhn_assets.core.ingest import QUARANTINE_SCHEMA, TRIPLETS_SCHEMA
    from arhn_assets.core.lake import write_partition
    from arhn_assets.core.mining import CANDIDATES_SCHEMA
    from arhn_assets.core.rankings import RANKINGS_SCHEMA
    from arhn_assets.core.refine import RefineConfig, decide, refined_triplets
    from arhn_assets.core.snippets import SNIPPETS_SCHEMA
    from arhn_assets.core.triplet_formats import PASSAGES_SCHEMA
    from arhn_assets.defs.training import TRAINED_SCHEMA

    def write(table: str, rows: list[dict] | pl.DataFrame, schema: dict | None = None) -> None:
        frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, schema=schema)
        write_partition(frame, home / "lake" / table / f"dataset={dataset}")

    queries = ["q1", "q2", "q3"]
    docs = {q: [f"{q}-pos", *(f"{q}-n{i}" for i in range(1, 5)), f"{q}-reserve"] for q in queries}
    write("raw_triplets", [{"dataset": dataset, "query_id": q, "query_text": f"{dataset} question {q}?", "positive_ids": [f"{q}-pos"],
                            "provided_negative_ids": [], "source": "toy"} for q in queries], TRIPLETS_SCHEMA)
    write("raw_passages", [{"dataset": dataset, "doc_id": d, "title": f"title {d}", "text": f"{dataset} passage {d}", "origin": "toy"}
                           for q in queries for d in docs[q]], PASSAGES_SCHEMA)
    write("raw_triplets_quarantine", [{"dataset": dataset, "file": "toy.jsonl", "line": 7, "field": "query", "reason": "empty"}], QUARANTINE_SCHEMA)
    candidates = pl.DataFrame(
        [{"dataset": dataset, "query_id": q, "doc_id": d, "source": "positive" if d.endswith("pos") else "reserve" if d.endswith("reserve") else "mined",
          "rank": i, "score": 1.0 - i / 10, "positive_score": 0.9} for q in queries for i, d in enumerate(docs[q], start=1)],
        schema=CANDIDATES_SCHEMA,
    )
    write("mined_negatives", candidates)
    answered = {("q1", "q1-n1"), ("q1", "q1-n2"), ("q1", "q1-n4"), ("q2", "q2-n3"), ("q3", "q3-n1")}
    judged = candidates.filter(pl.col("source") != "reserve")
    snippets = pl.DataFrame(
        [{"dataset": dataset, "query_id": q, "doc_id": d, "is_original_positive": d.endswith("pos"),
          "snippet": f"snippet of {d}" if (q, d) in answered or d.endswith("pos") else None,
          "status": "answer" if (q, d) in answered or d.endswith("pos") else ("invalid" if d.endswith("n3") else "no_answer"),
          "completion": "...", "model": "toy-llm", "prompt_version": 1, "prompt_tokens": 100 + i, "completion_tokens": 10 + i, "cached": i % 3 == 0}
         for i, (q, d) in enumerate(judged.select("query_id", "doc_id").iter_rows())],
        schema=SNIPPETS_SCHEMA,
    )
    write("answer_snippets", snippets.drop("cached") if drop_cached else snippets)
    # q1: n1, n2 above the positive (n1, n2 answered: false negatives), n4 below and answered (filtered);
    # q2: n3 answered but below; q3: an invalid ranking
    orders = {"q1": ["q1-n2", "q1-n1", "q1-n3", "q1-pos", "q1-n4"], "q2": ["q2-pos", "q2-n1", "q2-n2", "q2-n3", "q2-n4"], "q3": ["q3-n1", "q3-pos"]}
    status = {"q1": "ok", "q2": "ok", "q3": "wrong_format"}
    rankings = pl.DataFrame(
        [{"dataset": dataset, "query_id": q, "ranking": orders[q], "positive_rank": orders[q].index(f"{q}-pos") + 1 if status[q] == "ok" else None,
          "status": status[q], "windows": 1, "window_statuses": [status[q]], "model": "toy-llm", "prompt_version": 1} for q in queries],
        schema=RANKINGS_SCHEMA,
    )
    write("answerability_rankings", rankings)
    decisions = decide(candidates, snippets, rankings, RefineConfig(configs=("baseline", "R", "F", "R+F")))
    write("relabel_decisions", decisions)
    write("refined_triplets", refined_triplets(decisions))
    configs = ["baseline", "R", "F", "R+F"]
    write("trained_retriever", [{"dataset": dataset, "config": c, "model_path": f"/models/{c}", "steps": 2, "reused": False} for c in configs], TRAINED_SCHEMA)
    metrics = {"ndcg@10": 0.5, "recall@100": 0.8}
    value = {"base": -0.02, "baseline": 0.0, "R": 0.03, "F": 0.01, "R+F": 0.03}  # R and R+F tie
    keys = {"dataset": dataset, "eval_dataset": dataset, "split": "test"}
    scores = [{**keys, "config": c, "model_path": f"/models/{c}", "metric": m, "value": v + value[c]} for c in value for m, v in metrics.items()]
    write("beir_scores", pl.DataFrame(scores).select("dataset", "config", "model_path", "eval_dataset", "split", "metric", "value"))
    write("beir_query_scores", pl.DataFrame([{**s, "query_id": q} for s in scores for q in ("t1", "t2")])
          .select("dataset", "config", "model_path", "eval_dataset", "split", "query_id", "metric", "value"))
    write("retrieval_report", pl.DataFrame([{"eval_dataset": dataset, "config": s["config"], "metric": s["metric"], "value": s["value"],
                                             "delta": None, "p_ttest": None, "p_wilcoxon": None} for s in scores],
                                           schema={"eval_dataset": pl.String, "config": pl.String, "metric": pl.String, "value": pl.Float64,
                                                   "delta": pl.Float64, "p_ttest": pl.Float64, "p_wilcoxon": pl.Float64}))


def test_marts_match_a_lake_of_two_datasets(tmp_path):
    """Two datasets sharing query and doc ids (joins stay within a dataset), one written before
    answer_snippets had a `cached` column (union_by_name reads it as null)."""
    home = tmp_path / "home"
    write_toy_lake(home, "toy")
    write_toy_lake(home, "older", drop_cached=True)
    run_dbt_build(home, tmp_path)
    for dataset in ("toy", "older"):
        assert_warehouse_matches_lake(home, dataset)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as warehouse:
        # q1's n1 and n2 beat the positive (rank 4) with an answer: n2 first (the wider margin)
        assert frame(warehouse, "select query_id, doc_id, rank_margin, relabeled_in from false_negative_candidates where dataset = 'toy' order by confidence_rank").rows() == [
            ("q1", "q1-n2", 3, ["R", "R+F"]), ("q1", "q1-n1", 2, ["R", "R+F"]),
        ]
        summary = {r["config"]: r for r in frame(warehouse, "select * from relabel_summary where dataset = 'toy'").iter_rows(named=True)}
        # R relabels every negative above the positive (n1, n2, n3: no snippet needed by default)
        assert (summary["R"]["relabeled"], summary["F"]["filtered"], summary["R+F"]["filtered"]) == (3, 2, 2)
        assert summary["R"]["invalid_rankings"] == 1 and summary["baseline"]["invalid_rankings"] == 0
        cached = dict(frame(warehouse, "select dataset, cache_hits from llm_calls_summary where stage = 'answer_snippets'").iter_rows())
        assert cached == {"toy": 5, "older": None}
        ranks = dict(frame(warehouse, "select config, rank from beir_leaderboard where dataset = 'toy' and metric = 'ndcg@10'").iter_rows())
        assert ranks == {"R": 1, "R+F": 1, "F": 3, "baseline": 4, "base": 5}
