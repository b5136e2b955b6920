"""`embedding_model.execution: ray` on a real local Ray (2 CPUs): sentence-transformers actors write
the same embedding-cache shards an in-process encode writes, and a rerun encodes nothing."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.ray_encoding import RayEncoding
from arhn_assets.defs.resources import EmbeddingModel, RayConnection

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.all_cores]  # a Ray cluster and a sentence-transformers actor on CPU

TEXTS = [f"Passage {i}: plants need light, water and {'carbon dioxide ' * (i % 5)}to grow." for i in range(40)]


def test_ray_actors_write_the_shards_an_in_process_encode_reads(tmp_path):
    """The `embedding_model` resource with execution 'ray' (a local Ray of 2 CPUs, started by the
    `ray` resource when the first cache miss is encoded): one encoder actor writes a shard per batch
    of 16, and the vectors are those an in-process encode gives."""
    expected = Encoder(EncoderSpec(), tmp_path / "in_process").encode(TEXTS, "document")
    lines: list[str] = []
    model = EmbeddingModel(execution="ray", ray_batch_size=16, ray_cluster=RayConnection(num_cpus=2))
    encoder = model.encoder(tmp_path / "ray", log=lines.append, context=dg.build_asset_context())
    assert not ray.is_initialized()  # Ray starts only when there is something to encode
    try:
        vectors = encoder.encode(TEXTS + TEXTS[:3], "document")
    finally:
        ray.shutdown()
    np.testing.assert_allclose(vectors, np.concatenate([expected, expected[:3]]), atol=1e-5)
    assert encoder.stats["document"].encoded == len(TEXTS) and encoder._model is None  # the driver loaded no model
    assert any(line.startswith(f"Ray Data job: {len(TEXTS)} documents on 1 encoder actor(s)") for line in lines)
    (folder,) = (tmp_path / "ray").iterdir()
    assert len(list(folder.glob("shard-*.hashes.npy"))) == 3  # 40 texts in batches of 16, a shard each

    # Another process (no Ray now) reads the actors' shards: every text is a cache hit.
    reread = Encoder(EncoderSpec(), tmp_path / "ray", encode_misses=RayEncoding())
    np.testing.assert_allclose(reread.encode(TEXTS, "document"), expected, atol=1e-5)
    assert reread.stats["document"].encoded == 0
