"""The commands the README tells users to run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from arhn_assets.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli_env(tmp_path) -> dict:
    (tmp_path / "dagster").mkdir()
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "ARHN_HOME": str(tmp_path / "home")}


def arhn(*args: str) -> list[str]:
    return [sys.executable, "-m", "arhn_assets.cli", *args]


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
