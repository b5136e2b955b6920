"""Where arhn reads datasets and writes outputs, and the one gate every dataset name passes.

Dataset names become directory names, hive partition values and SQL literals, so they are
validated here, once, before any path or query is built from them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DATASET_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class InvalidDatasetKey(ValueError):
    """A dataset (partition) key that could escape a directory or a SQL literal."""


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


@dataclass(frozen=True)
class ArhnPaths:
    """The two roots: `data_dir` holds BEIR dataset folders (read-only is fine), `home` holds
    everything arhn writes (lake, landing, caches, models, reports)."""

    home: Path
    data_dir: Path

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
