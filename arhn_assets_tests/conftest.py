"""Shared fixtures: where the real (read-only) shared data lives, and an ArhnPaths per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from arhn_assets.core.paths import ArhnPaths
from arhn_assets_tests.helpers.llm_server import free_port, start_server, stop, wait_until_up
from arhn_assets_tests.helpers.workers import pin_to_a_share_of_the_cores

DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config) -> None:
    """Before any test imports torch or starts llama.cpp: an xdist worker keeps to its cores."""
    pin_to_a_share_of_the_cores()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder: $ARHN_TEST_DATA, else <repo>/../shared/data.

    Missing data fails the run under CI (where it must be present) and skips elsewhere.
    """
    folder = Path(os.environ.get("ARHN_TEST_DATA") or DEFAULT_SHARED_DATA)
    if not folder.is_dir():
        message = (
            f"shared test data not found at {folder} (expected scifact/, bge_examples/, "
            "rlhn_llm_judgments/ there); set ARHN_TEST_DATA to the folder that holds them"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture
def arhn_paths(tmp_path: Path, shared_data: Path) -> ArhnPaths:
    return ArhnPaths(home=tmp_path / "home", data_dir=shared_data)


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    """One embedding cache for the whole run: the SciFact corpus is encoded once, not per test."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture
def lake_home(tmp_path: Path, shared_data: Path, embedding_cache: Path, models_cache: Path, monkeypatch) -> Path:
    """ARHN_HOME for Dagster runs in this test, sharing the session's embedding cache."""
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "embeddings").symlink_to(embedding_cache, target_is_directory=True)
    (home / "cache" / "models").symlink_to(models_cache, target_is_directory=True)
    monkeypatch.setenv("ARHN_HOME", str(home))
    monkeypatch.setenv("ARHN_DATA_DIR", str(shared_data))
    return home


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory) -> Path:
    """Where multi-part GGUF presets are joined once per test run (Qwen: 1.1 GB, ~6 s), then reused."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def llm_server() -> Iterator[str]:
    """The base URL of a real llama.cpp server (arhn llm-server) on 127.0.0.1, for one test module."""
    port = free_port()
    process = start_server(port)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(process, base_url)
        yield base_url
    finally:
        stop(process)


@pytest.fixture
def msmarco_sample(lake_home, shared_data) -> Path:
    """A dataset partition landed from FlagEmbedding's MS MARCO examples (10 queries, 26 candidates each)."""
    landing = lake_home / "landing" / "msmarco-sample"
    landing.mkdir(parents=True)
    shutil.copy(shared_data / "bge_examples" / "embedder_msmarco.jsonl", landing / "msmarco.jsonl")
    return lake_home
