"""The commands the README tells users to run."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from arhn_assets.cli import main
from arhn_assets.metadata import markdown_preview
from arhn_assets.run_output import LOGGER_KEY, CompactHandler, asset_figures

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli_env(tmp_path) -> dict:
    (tmp_path / "dagster").mkdir()
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "ARHN_HOME": str(tmp_path / "home")}


def arhn(*args: str) -> list[str]:
    return [sys.executable, "-m", "arhn_assets.cli", *args]


@pytest.mark.slow
def test_datasets_are_added_listed_and_removed(cli_env):
    added = run(arhn("datasets", "add", "scifact", "fiqa-rlhn"), cli_env)
    assert added.returncode == 0, added.stderr
    assert run(arhn("datasets", "add", "scifact"), cli_env).stdout.strip() == "added: nothing new"
    assert run(arhn("datasets", "list"), cli_env).stdout.split() == ["scifact", "fiqa-rlhn"]
    assert run(arhn("datasets", "remove", "fiqa-rlhn"), cli_env).returncode == 0
    assert run(arhn("datasets", "list"), cli_env).stdout.split() == ["scifact"]


@pytest.mark.parametrize("name", ["../etc", "a/b", "x'; drop table t; --", "with space", "naïve"])
def test_hostile_dataset_names_are_refused(cli_env, monkeypatch, capsys, name):
    monkeypatch.setenv("DAGSTER_HOME", cli_env["DAGSTER_HOME"])
    assert main(["datasets", "add", name]) == 2
    assert "invalid dataset name" in capsys.readouterr().err
    assert main(["datasets", "list"]) == 0
    assert capsys.readouterr().out.strip() == ""


@pytest.mark.slow
def test_dagster_cli_lists_and_validates_the_definitions(cli_env):
    listed = run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "list", "-m", "arhn_assets.definitions"], cli_env
    )
    assert listed.returncode == 0, listed.stderr
    assert {"raw_triplets", "raw_passages", "raw_triplets_quarantine", "mined_negatives"} <= set(listed.stdout.split())
    validated = run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], cli_env
    )
    assert validated.returncode == 0, validated.stderr


INGEST_STEPS = [
    "ingest_dataset",
    "raw_passages_table_checks",
    "raw_triplets_quarantine_table_checks",
    "raw_triplets_table_checks",
]
CLOCK = r"\d\d:\d\d:\d\d"


def run_ingest(monkeypatch, capsys, home: Path, dataset: str, *extra: str) -> tuple[int, str, str]:
    """`arhn run --select group:ingest` in this process, with a fresh Dagster instance."""
    monkeypatch.setenv("DAGSTER_HOME", str(home.parent / "dagster"))
    code = main(["run", "--dataset", dataset, "--select", "group:ingest", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_prints_a_line_per_step_then_a_summary_and_where_to_look(msmarco_sample, monkeypatch, capsys):
    code, out, err = run_ingest(monkeypatch, capsys, msmarco_sample, "msmarco-sample")
    assert code == 0, out + err
    assert "DEBUG" not in out + err and "STEP_START" not in out + err
    for step in INGEST_STEPS:
        assert len(re.findall(rf"^{CLOCK} {step}: started$", out, re.MULTILINE)) == 1, out
        assert len(re.findall(rf"^{CLOCK} {step}: done in \d+\.\d s: \S.*$", out, re.MULTILINE)) == 1, out
    assert re.search(rf"^{CLOCK} ingest_dataset: done in .* s: 10 queries, 260 passages, 0 quarantined$", out, re.M)
    assert re.search(rf"^{CLOCK} raw_triplets_table_checks: done in .* s: 2/2 checks passed$", out, re.M)
    run_id = re.search(r"^arhn: run (\S+) succeeded in .* s; 4 steps: 4 ok$", out, re.MULTILINE)
    assert run_id, out
    table = out[out.index("step ") : out.index("Where to look:")].strip().splitlines()
    assert table[0].split() == ["step", "status", "time", "key", "figures"]
    assert sorted(row.split()[:2] for row in table[1:]) == sorted([step, "ok"] for step in INGEST_STEPS)
    assert re.search(r"^ingest_dataset +ok +\d+\.\d s  10 queries, 260 passages, 0 quarantined$", out, re.M)
    where = out[out.index("Where to look:") :]
    assert "report     none yet" in where and "exports    none yet" in where
    assert f"lake       {msmarco_sample / 'lake'}/<asset>/dataset=msmarco-sample/" in where
    assert f"UI         make dev, then http://127.0.0.1:3000/runs/{run_id.group(1)}" in where


def test_a_warehouse_on_disk_is_named_with_a_duckdb_command(msmarco_sample, monkeypatch, capsys):
    (msmarco_sample / "warehouse.duckdb").touch()
    (msmarco_sample / "reports" / "msmarco-sample").mkdir(parents=True)
    (msmarco_sample / "reports" / "msmarco-sample" / "report.md").write_text("# report\n")
    code, out, _ = run_ingest(monkeypatch, capsys, msmarco_sample, "msmarco-sample")
    assert code == 0
    warehouse = msmarco_sample / "warehouse.duckdb"
    assert f"report     {msmarco_sample / 'reports' / 'msmarco-sample' / 'report.md'}\n" in out
    assert (
        f'warehouse  {warehouse}  (duckdb -readonly {warehouse} "select * from relabel_summary '
        "where dataset = 'msmarco-sample'\")" in out
    )


def test_a_failed_step_is_printed_in_full(lake_home, monkeypatch, capsys):
    landing = lake_home / "landing" / "broken"
    landing.mkdir(parents=True)
    (landing / "bad.jsonl").write_text('{"foo": 1}\n')
    code, out, err = run_ingest(monkeypatch, capsys, lake_home, "broken")
    assert code == 1
    assert "DEBUG" not in out + err
    failed = re.search(rf"^{CLOCK} ingest_dataset: FAILED after \d+\.\d s\n((?:    .*\n)+)", out, re.MULTILINE)
    assert failed, out
    details = failed.group(1)
    assert "1 landed file(s) of dataset 'broken' have no valid row" in details
    assert f"{landing / 'bad.jsonl'} [<line>] neither a BGE line" in details and "fields present: ['foo']" in details
    assert "    quarantined_rows: 1\n" in details
    assert re.search(r"^arhn: run \S+ failed in .* s; 4 steps: 1 FAILED, 3 not run$", out, re.MULTILINE), out
    assert re.search(r"^ingest_dataset +FAILED +\d+\.\d s  1 quarantined$", out, re.MULTILINE)
    for step in INGEST_STEPS[1:]:
        assert re.search(rf"^{step} +not run$", out, re.MULTILINE)
    assert "arhn: step ingest_dataset failed: " in err and "have no valid row" in err


def test_verbose_prints_dagsters_event_log(msmarco_sample, monkeypatch, capsys):
    code, out, err = run_ingest(monkeypatch, capsys, msmarco_sample, "msmarco-sample", "--verbose")
    assert code == 0
    assert re.search(r" - DEBUG - .* - ingest_dataset - STEP_START - ", err), err
    assert re.search(r" - DEBUG - .* - ingest_dataset - ASSET_MATERIALIZATION - ", err)
    assert not re.search(rf"^{CLOCK} ingest_dataset: started$", out, re.MULTILINE)
    assert "succeeded in" in out and "Where to look:" in out


def test_key_figures_are_read_from_the_metadata_previews():
    scores = pl.DataFrame(
        {
            "eval_dataset": ["scifact"] * 3,
            "config": ["base", "baseline", "R+F"],
            "ndcg@10": [0.6451, 0.6512, 0.6634],
            "recall@100": [0.9, 0.91, 0.92],
        }
    )
    summary = pl.DataFrame({"config": ["baseline", "R", "F", "R+F"]}).with_columns(
        relabel_rate=pl.Series([0.0, 0.042, 0.0, 0.042]), filter_rate=pl.Series([0.0, 0.0, 0.081, 0.081])
    )
    metadata = {
        "beir_scores": {"scores": markdown_preview(scores, rows=50).value},
        "relabel_decisions": {"summary": markdown_preview(summary, rows=20).value},
        "answer_snippets": {
            "llm_calls": 1200,
            "cache_hits": 200,
            "groundedness_rate": 0.9312,
            "status_counts": {"answer": 339, "ungrounded": 25, "no_answer": 1036},
        },
        "answerability_rankings": {"llm_calls": 10, "cache_hits": 0, "status_counts": {"ok": 9, "wrong_format": 1}},
        "judge_audit": {"R_f1": 0.8, "R+F_f1": 0.75, "snippets_calls": 40, "rankings_calls": 10, "wall_seconds": 3},
    }
    assert asset_figures("beir_scores", metadata["beir_scores"]) == ["nDCG@10 scifact: base 0.645, best R+F 0.663"]
    assert asset_figures("relabel_decisions", metadata["relabel_decisions"]) == [
        "relabel rate 4.2%",
        "filter rate 8.1%",
    ]
    assert asset_figures("answer_snippets", metadata["answer_snippets"]) == [
        "1,200 LLM calls (200 cached)",
        "364/1,400 answered",
        "93.1% grounded",
    ]
    # no answer at all: no groundedness rate, which would read 0% as if every answer were invented
    silent = {"llm_calls": 33, "cache_hits": 0, "groundedness_rate": 0.0, "status_counts": {"no_answer": 33}}
    assert asset_figures("answer_snippets", silent) == ["33 LLM calls (0 cached)", "0/33 answered"]
    assert asset_figures("answerability_rankings", metadata["answerability_rankings"])[1] == "9/10 rankings valid"
    assert asset_figures("judge_audit", metadata["judge_audit"]) == ["F1 R 0.80, R+F 0.75", "50 LLM calls"]
    mined = {"negatives": {"mined": 60, "provided": 0, "reserve": 30}, "queries": 6}
    assert asset_figures("mined_negatives", mined | {"passages_encoded": 5183, "embedding_cache_hits": 0}) == [
        "60 mined + 30 reserve negatives for 6 queries",
        "5,183 passages encoded (0 cached)",
    ]
    # Metadata without a figure's entries (or an asset without figures) falls back to the row count.
    assert asset_figures("mined_negatives", {"dagster/row_count": 7}) == ["mined_negatives 7 rows"]
    assert asset_figures("stg_raw_triplets", {}) == []


def test_every_job_accepts_the_compact_logger_so_the_ui_can_re_execute_cli_runs():
    from arhn_assets.definitions import defs

    definitions = defs()
    for name in ("arhn_pipeline", "judge_audit_job"):
        job = definitions.resolve_job_def(name)
        assert set(job.loggers) == {"console", LOGGER_KEY}
        assert dg.validate_run_config(job, {"loggers": {LOGGER_KEY: {}}})["loggers"] == {LOGGER_KEY: {}}


def test_compact_lines_reach_the_console_while_a_step_redirects_stdout(capsys):
    """The warehouse step sends dbt's echo elsewhere for a while; the run's own lines must still
    reach the console the run started with."""
    handler = CompactHandler()
    record = logging.makeLogRecord(
        {"msg": "an asset's own line", "levelno": logging.INFO, "dagster_meta": {"step_key": "warehouse_models"}}
    )
    with contextlib.redirect_stdout(io.StringIO()) as elsewhere:
        handler.emit(record)
    assert re.fullmatch(rf"{CLOCK} warehouse_models: an asset's own line\n", capsys.readouterr().out)
    assert elsewhere.getvalue() == ""
