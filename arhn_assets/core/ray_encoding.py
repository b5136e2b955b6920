"""`embedding_model.execution: ray`: a corpus encoded by sentence-transformers replicas (Ray Data
actors) that write the same embedding-cache shards mining and evaluation read.

The driver's `Encoder` hands `RayEncoding` its cache misses (`Encoder.encode_misses`). They become
one Ray Dataset; each actor holds its own `Encoder` of the same spec and cache folder and encodes
its batches through it, so every batch is written as a shard by `EmbeddingStore.add`, exactly as
an in-process encode writes them. The driver then reads the store again. On a cluster the cache
folder ($ARHN_HOME/cache/embeddings) must be a volume every worker can write; an actor whose node
resolves the model to another fingerprint (another cache key) fails at start, naming both. A job
or an actor killed midway keeps the shards written, and the rerun encodes only the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from arhn_assets.core.embeddings import Encoder, EncoderSpec, Role
from arhn_assets.core.llm.ray_data import ray_logs_to
from arhn_assets.core.progress import Log


class EncoderReplica:
    """A Ray actor holding the model: encodes each batch through its own `Encoder`, which writes
    the batch's embeddings as a shard of the shared cache."""

    def __init__(self, spec: dict, cache_dir: str, role: Role, folder: str):
        self.encoder = Encoder(EncoderSpec(**spec), Path(cache_dir), chunk_size=2**31)
        self.role = role
        mine = self.encoder.store(role).folder
        if mine != Path(folder):
            raise RuntimeError(
                f"this Ray worker's encoder writes to {mine}, the driver's to {folder}: give every node the same model"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(text) for text in batch["text"]]
        self.encoder.encode(texts, self.role)
        return {"encoded": np.array([len(texts)], dtype=np.int64)}


@dataclass
class RayEncoding:
    """`Encoder.encode_misses` on Ray: `replicas` actors of `cpus_per_replica` CPUs (and
    `gpus_per_replica` GPUs), `batch_size` texts per batch, one shard each. `connect` connects this
    process to Ray first (the `ray` resource); `log` gets Ray Data's progress."""

    replicas: int = 1
    batch_size: int = 256
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    connect: Callable[[], None] | None = None
    log: Log | None = None

    def __call__(self, encoder: Encoder, texts: list[str], role: Role) -> None:
        import ray
        from ray.data import ActorPoolStrategy

        if self.connect is not None:
            self.connect()
        folder = encoder.store(role).folder
        if self.log is not None:
            self.log(f"Ray Data job: {len(texts)} {role}s on {self.replicas} encoder actor(s), shards in {folder}")
        dataset = ray.data.from_items([{"text": text} for text in texts], override_num_blocks=self.replicas)
        encoded = dataset.map_batches(
            EncoderReplica,
            fn_constructor_kwargs={
                "spec": asdict(encoder.spec),
                "cache_dir": str(encoder.cache_dir),
                "role": role,
                "folder": str(folder),
            },
            batch_size=self.batch_size,
            compute=ActorPoolStrategy(size=self.replicas),
            num_cpus=self.cpus_per_replica,
            num_gpus=self.gpus_per_replica,
        )
        with ray_logs_to(self.log):
            done = sum(int(batch["encoded"].sum()) for batch in encoded.iter_batches(batch_size=None))
        if done != len(texts):
            raise RuntimeError(f"the Ray encoding job returned {done} of {len(texts)} {role}s")
