from __future__ import annotations

from pathlib import Path

import pytest

from arhn_assets.core.paths import (
    ArhnPaths,
    InvalidDatasetKey,
    InvalidFileName,
    validate_dataset_key,
    validate_file_name,
)

VALID_KEYS = ["scifact", "msmarco-v2.1", "a_b.c", "A", "x" * 128]

INVALID_KEYS = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "a\\b",
    "x'; DROP TABLE t;--",
    "with space",
    "naïve",
    '"quoted"',
    "x" * 129,
    "-leading-dash",
    ".hidden",
    "trailing\n",
]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_keys_are_returned_unchanged(key):
    assert validate_dataset_key(key) == key


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_rejected(key):
    with pytest.raises(InvalidDatasetKey, match="invalid dataset name"):
        validate_dataset_key(key)


@pytest.mark.parametrize("key", [None, 3, b"scifact"])
def test_non_string_keys_are_rejected(key):
    with pytest.raises(InvalidDatasetKey):
        validate_dataset_key(key)


def test_invalid_dataset_key_is_a_value_error():
    assert issubclass(InvalidDatasetKey, ValueError)


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_paths_are_never_built_from_invalid_keys(tmp_path, key):
    paths = ArhnPaths(home=tmp_path / "home", data_dir=tmp_path / "data")
    with pytest.raises(InvalidDatasetKey):
        paths.lake_partition("raw_triplets", key)
    with pytest.raises(InvalidDatasetKey):
        paths.landing_dir(key)
    with pytest.raises(InvalidDatasetKey):
        paths.dataset_dirs(key)
    assert not tmp_path.joinpath("home").exists()


def test_paths_for_a_valid_key(tmp_path):
    paths = ArhnPaths(home=tmp_path / "home", data_dir=tmp_path / "data")
    assert (
        paths.lake_partition("raw_triplets", "scifact")
        == tmp_path / "home" / "lake" / "raw_triplets" / "dataset=scifact"
    )
    assert paths.landing_dir("msmarco-v2.1") == tmp_path / "home" / "landing" / "msmarco-v2.1"
    assert paths.dataset_dirs("scifact") == [tmp_path / "data" / "scifact", tmp_path / "home" / "datasets" / "scifact"]


def test_dataset_dirs_deduplicates_when_data_dir_is_under_home(tmp_path):
    home = tmp_path / "home"
    paths = ArhnPaths(home=home, data_dir=home / "datasets")
    assert paths.dataset_dirs("scifact") == [home / "datasets" / "scifact"]


def test_from_env_makes_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARHN_HOME", "h")
    monkeypatch.delenv("ARHN_DATA_DIR", raising=False)
    paths = ArhnPaths.from_env()
    assert paths.home == tmp_path / "h"
    assert paths.data_dir == tmp_path / "h" / "datasets"
    monkeypatch.setenv("ARHN_DATA_DIR", str(tmp_path / "d"))
    assert ArhnPaths.from_env().data_dir == Path(tmp_path / "d")


@pytest.mark.parametrize("name", ["part-0.jsonl", "fiqa.stage_1.gpt-4o-mini.jsonl.gz", "x.parquet", "A" * 255])
def test_safe_file_names_pass(name):
    assert validate_file_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../x.jsonl",
        "quote's.jsonl",
        'dq".jsonl',
        "with space.jsonl",
        "x';DROP TABLE t;--.jsonl",
        "données.jsonl",
        "-dash.jsonl",
        ".hidden.jsonl",
        "tab\t.jsonl",
        "A" * 256,
        "",
    ],
)
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(InvalidFileName, match="refused file name"):
        validate_file_name(name)


def test_a_home_with_a_quote_is_refused_before_it_reaches_sql(tmp_path):
    with pytest.raises(ValueError, match="single quote"):
        ArhnPaths(home=tmp_path / "it's", data_dir=tmp_path)
