"""Encoding backends: the packaged all-MiniLM-L6-v2 exported with torch.onnx and run by ONNX Runtime
and OpenVINO, unquantized and int8, against torch; the export is reused, the cache keeps the
backends apart, and a backend that cannot run says which extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets_tests.helpers.toy_data import make_passages

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # exports MiniLM with torch.onnx and quantizes it (about a minute)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One embedding cache (and model cache beside it) for the module: MiniLM is exported once."""
    return tmp_path_factory.mktemp("backends") / "cache" / "embeddings"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return make_passages()["text"].to_list()


@pytest.fixture(scope="module")
def reference(texts, tmp_path_factory) -> np.ndarray:
    return Encoder(EncoderSpec(), tmp_path_factory.mktemp("torch") / "embeddings").encode(texts, "document")


@pytest.mark.parametrize(
    ("backend", "quantization", "least_cosine"),
    [
        ("onnx", "none", 0.9999),
        ("openvino", "none", 0.9999),
        # int8: dynamic per-channel weights; close, not equal (benchmarks/mining.py measures its agreement)
        ("onnx", "int8", 0.98),
        ("openvino", "int8", 0.98),
    ],
)
def test_each_backend_encodes_close_to_torch(backend, quantization, least_cosine, texts, reference, cache):
    encoder = Encoder(EncoderSpec(backend=backend, quantization=quantization), cache)
    vectors = encoder.encode(texts, "document")
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= least_cosine, f"{backend}/{quantization}: least cosine {cosines.min():.4f}"
    exported = list((cache.parent / "models" / "encoders").rglob("*.onnx"))
    assert exported, "the export lives in the model cache beside the embedding cache"


def test_the_export_is_reused_and_backends_never_share_cache_entries(texts, cache):
    Encoder(EncoderSpec(backend="onnx"), cache).encode(texts[:4], "document")
    graph = next((cache.parent / "models" / "encoders").rglob("model.onnx"))
    written = graph.stat().st_mtime_ns
    unseen = [f"a passage no encoder has seen, number {i}" for i in range(3)]  # so the model loads again
    Encoder(EncoderSpec(backend="onnx"), cache).encode(unseen, "document")
    assert graph.stat().st_mtime_ns == written, "exported once, loaded afterwards"
    keys = {
        Encoder(EncoderSpec(backend=b, quantization=q), cache).cache_key("document")[0]
        for b, q in (("torch", "none"), ("onnx", "none"), ("onnx", "int8"), ("openvino", "none"))
    }
    assert len(keys) == 4


def test_torch_refuses_quantization_with_a_clear_error():
    with pytest.raises(ValueError, match="quantization needs backend onnx or openvino"):
        EncoderSpec(quantization="int8")


@pytest.mark.parametrize(
    ("backend", "missing", "extra"), [("onnx", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino")]
)
def test_a_missing_runtime_names_the_backend_and_the_extra(backend, missing, extra, tmp_path):
    """The runtime made unimportable in a fresh interpreter, as on a machine without the extra."""
    script = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from pathlib import Path\n"
        "from arhn_assets.core.embeddings import Encoder, EncoderSpec\n"
        f"Encoder(EncoderSpec(backend={backend!r}), Path({str(tmp_path)!r})).encode(['a'], 'document')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"the {backend} encoding backend needs {missing}: pip install 'arhn[{extra}]'" in result.stderr
