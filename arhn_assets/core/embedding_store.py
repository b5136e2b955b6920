"""The embedding cache's storage: `.npy` shards of one cache key's folder, and lazy views of them.

`core/embeddings.py` decides what a cache key is and fills it; this module only stores and reads
vectors. A shard is a `.npy` of float32 vectors, memory-mapped when read, beside a `.npy` of their
texts' hashes: only the hash -> row index is held in memory, so a corpus of millions of passages is
never loaded whole (`core/search.py` reads it chunk by chunk through an `EmbeddingView`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np


class EmbeddingStore:
    """The shards of one cache key's folder: `shard-<time>-<id>.vectors.npy` (float32 rows) and
    `shard-<time>-<id>.hashes.npy` (their texts' hashes, written last: a shard exists once its
    hashes do). Only the index text hash -> row (numbered across shards, oldest shard first) is
    held in memory; rows are read from memory-mapped shards on demand (`take`), each mapping
    dropped once read, so what stays resident is what the caller keeps."""

    def __init__(self, folder: Path, description: dict):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        spec_file = folder / "spec.json"
        if not spec_file.exists():
            spec_file.write_text(json.dumps(description, indent=2, sort_keys=True))
        self._rows: dict[str, int] = {}
        self._shards: list[Path] = []
        self._starts = np.zeros(1, dtype=np.int64)  # first row of each shard, then the row count
        self.dim = 0
        for hashes_file in sorted(folder.glob("shard-*.hashes.npy")):
            vectors = hashes_file.with_name(hashes_file.name.removesuffix(".hashes.npy") + ".vectors.npy")
            dim = np.load(vectors, mmap_mode="r").shape[1]
            self._register(vectors, np.load(hashes_file).astype(str).tolist(), dim)

    def _register(self, vectors: Path, hashes: list[str], dim: int) -> None:
        start = int(self._starts[-1])
        for row, key in enumerate(hashes, start):
            self._rows.setdefault(key, row)
        self._shards.append(vectors)
        self._starts = np.append(self._starts, start + len(hashes))
        self.dim = dim

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, key: str) -> int:
        return self._rows[key]

    def get(self, hashes: list[str]) -> np.ndarray:
        return self.take(np.fromiter((self._rows[h] for h in hashes), dtype=np.int64, count=len(hashes)))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Float32 rows by number (-1: a row of zeros), gathered shard by shard from the mapped files."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        present = np.flatnonzero(rows >= 0)
        if not len(present):
            return out
        shard = np.searchsorted(self._starts, rows[present], side="right") - 1
        order = np.argsort(shard, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(shard[order])) + 1):
            number = int(shard[group[0]])
            local = rows[present[group]] - self._starts[number]
            vectors = np.load(self._shards[number], mmap_mode="r")
            contiguous = (np.diff(local) == 1).all()  # then one slice, not a gather
            out[present[group]] = vectors[local[0] : local[-1] + 1] if contiguous else vectors[local]
            del vectors  # unmapped: its pages stop counting towards this process
        return out

    def add(self, hashes: list[str], embeddings: np.ndarray) -> None:
        """One new shard, its files written under temporary names and renamed into place."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        vectors = self.folder / f"{name}.vectors.npy"
        _write_atomically(vectors, embeddings)
        _write_atomically(self.folder / f"{name}.hashes.npy", np.array(hashes, dtype="S"))
        self._register(vectors, list(hashes), embeddings.shape[1])


def _write_atomically(path: Path, array: np.ndarray) -> None:
    with open(tmp := path.with_name(f".{path.name}.tmp"), "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


class EmbeddingView:
    """Embeddings of a list of texts, in that order, read from a store's shards on demand:
    `shape`, `chunks(size)` yielding (offset, float32 block) in order, and `view[indices]` for
    some rows. Row number -1 stands for a row of zeros (a text that was not needed)."""

    def __init__(self, store: EmbeddingStore, rows: np.ndarray):
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.store.dim)

    def __getitem__(self, indices) -> np.ndarray:
        return self.store.take(self.rows[np.asarray(indices, dtype=np.int64)])

    def chunks(self, size: int):
        for offset in range(0, len(self.rows), size):
            yield offset, self.store.take(self.rows[offset : offset + size])

    def expand(self, positions, length: int) -> EmbeddingView:
        """A view of `length` rows: this view's i-th row at `positions[i]`, zeros elsewhere."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) != len(self.rows):
            raise ValueError(f"{len(positions)} positions for a view of {len(self.rows)} rows")
        rows = np.full(length, -1, dtype=np.int64)
        rows[positions] = self.rows
        return EmbeddingView(self.store, rows)
