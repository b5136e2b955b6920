"""Where arhn reads datasets and writes outputs, and the gates every dataset and landed-file name pass.

Dataset names become directory names, hive partition values and SQL literals, and landed-file
names end up in quarantine rows, run tags and logs, so both are validated here, once, before any
file is opened or any path or query is built from them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DATASET_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


# The same alphabet for landed files; the suffix (.jsonl, .jsonl.gz, .parquet) is checked by ingest.
FILE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


class InvalidDatasetKey(ValueError):
    """A dataset (partition) key that could escape a directory or a SQL literal."""


class InvalidFileName(ValueError):
    """A landed file whose name holds characters arhn refuses (quotes, spaces, unicode, ...)."""


def validate_dataset_key(key: str) -> str:
    """Return `key` unchanged if it is a safe dataset name, else raise InvalidDatasetKey.

    Allowed: letters, digits, '-', '_', '.', starting with a letter or digit, at most 128
    characters, and not made of dots alone ('.' and '..' are path components).
    """
    if not isinstance(key, str) or not DATASET_KEY_PATTERN.fullmatch(key) or set(key) == {"."}:
        raise InvalidDatasetKey(
            f"invalid dataset name {key!r}: use 1-128 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (no path separators, spaces or quotes)"
        )
    return key


def validate_file_name(name: str) -> str:
    """Return `name` unchanged if it is a safe landed-file name, else raise InvalidFileName."""
    if not FILE_NAME_PATTERN.fullmatch(name):
        raise InvalidFileName(
            f"refused file name {name!r}: rename it to 1-255 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (no spaces, quotes or non-ASCII characters)"
        )
    return name


@dataclass(frozen=True)
class ArhnPaths:
    """The two roots: `data_dir` holds BEIR dataset folders (read-only is fine), `home` holds
    everything arhn writes (lake, landing, caches, models, reports)."""

    home: Path
    data_dir: Path

    def __post_init__(self) -> None:
        if "'" in str(self.home):
            # dbt's sources put the lake path inside a DuckDB string literal.
            raise ValueError(f"ARHN_HOME {str(self.home)!r} holds a single quote; choose a folder without one")

    @classmethod
    def from_env(cls) -> ArhnPaths:
        home = Path(os.environ.get("ARHN_HOME") or "data")
        data_dir = Path(os.environ.get("ARHN_DATA_DIR") or home / "datasets")
        return cls(home=home.resolve(), data_dir=data_dir.resolve())

    def lake_partition(self, asset: str, dataset: str) -> Path:
        return self.home / "lake" / asset / f"dataset={validate_dataset_key(dataset)}"

    def landing_dir(self, dataset: str) -> Path:
        return self.home / "landing" / validate_dataset_key(dataset)

    def dataset_dirs(self, dataset: str) -> list[Path]:
        """Where a BEIR folder named `dataset` may live, in lookup order; downloads go to the last."""
        validate_dataset_key(dataset)
        return list(dict.fromkeys([self.data_dir / dataset, self.home / "datasets" / dataset]))

    @property
    def embedding_cache_dir(self) -> Path:
        return self.home / "cache" / "embeddings"

    @property
    def models_cache_dir(self) -> Path:
        return self.home / "cache" / "models"
