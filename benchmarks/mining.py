"""Mining benchmark: every encoding backend vs sentence-transformers' mine_hard_negatives, one run.

SciFact train queries against the full corpus (5,183 passages), all-MiniLM-L6-v2, relative
margin 0.05, 10 negatives, `top` sampling. For each encoding (torch fp32 and bf16, ONNX Runtime
and OpenVINO unquantized and int8) it prints the wall-time ratio to sentence-transformers cold
(empty embedding cache; the one-off export to ONNX is timed apart) and warm (cache filled), the
agreement of the selected negatives (share of sentence-transformers' (query, negative) pairs arhn
also selects), and the base model's SciFact test nDCG@10 with that encoding (published: 0.6451).

    python benchmarks/mining.py [--data ../shared/data] [--queries N] [--only onnx-int8 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from arhn_assets.core.beir_io import load_beir_dataset  # noqa: E402
from arhn_assets.core.embeddings import Encoder, EncoderSpec, default_model_path  # noqa: E402
from arhn_assets.core.evaluation import evaluate, mean_scores  # noqa: E402
from arhn_assets.core.ingest import IngestConfig, ingest  # noqa: E402
from arhn_assets.core.mining import MiningConfig, mine_negatives  # noqa: E402
from arhn_assets.core.mining_reference import mine_with_sentence_transformers  # noqa: E402
from arhn_assets.core.paths import ArhnPaths  # noqa: E402
from arhn_assets.core.sampling import QuerySample  # noqa: E402

from common import add_data_argument  # noqa: E402

CONFIG = MiningConfig(num_negatives=10, relative_margin=0.05, sampling_strategy="top")
# (label, backend, quantization, precision)
ENCODINGS = [
    ("torch-fp32", "torch", "none", "fp32"),
    ("torch-bf16", "torch", "none", "bf16"),
    ("onnx-fp32", "onnx", "none", "fp32"),
    ("onnx-int8", "onnx", "int8", "fp32"),
    ("openvino-fp32", "openvino", "none", "fp32"),
    ("openvino-int8", "openvino", "int8", "fp32"),
]


def cpu_matmul_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    wanted = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni")
    return ", ".join(f for f in wanted if f in flags) or "none of AMX/AVX-512"


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def pairs(frame: pl.DataFrame, triplets: pl.DataFrame) -> set[tuple[str, str]]:
    if "query_text" not in frame.columns:
        frame = frame.filter(pl.col("source") == "mined").join(triplets.select("query_id", "query_text"), on="query_id")
    return set(frame.select("query_text", "doc_id").iter_rows())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(parser)
    parser.add_argument("--queries", type=int, default=None, help="cap on training queries (default: all 809)")
    parser.add_argument("--only", nargs="+", choices=[e[0] for e in ENCODINGS], help="measure only these encodings")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arhn-bench-") as home:
        paths = ArhnPaths(home=Path(home), data_dir=args.data.resolve())
        data = ingest("scifact", paths, IngestConfig(download=False), QuerySample(args.queries))
        triplets, passages = data.triplets, data.passages
        print(
            f"SciFact: {triplets.height} train queries, {passages.height} passages; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, CPU {platform.processor() or platform.machine()} "
            f"({cpu_matmul_flags()})"
        )

        # Warm up (allocator, thread pool, model files in the page cache) so neither side pays
        # the start-up of the process: the first timed run was otherwise ~10% slower.
        from sentence_transformers import SentenceTransformer

        SentenceTransformer(default_model_path(), device="cpu").encode(passages["text"].head(64).to_list())

        def reference():
            return mine_with_sentence_transformers(
                triplets, passages, SentenceTransformer(default_model_path(), device="cpu"), CONFIG
            )

        st_negatives, st_seconds = timed(reference)
        expected = pairs(st_negatives, triplets)
        print(
            f"sentence-transformers mine_hard_negatives, fp32, cold: {st_seconds:7.1f} s  ({len(expected)} negatives)"
        )

        scifact = load_beir_dataset("scifact", [args.data / "scifact"], download=False)
        for label, backend, quantization, precision in ENCODINGS:
            if args.only and label not in args.only:
                continue
            spec = EncoderSpec(backend=backend, quantization=quantization, precision=precision)
            measure(label, spec, Path(home) / label / "embeddings", triplets, passages, expected, st_seconds, scifact)


def measure(label, spec, cache, triplets, passages, expected, st_seconds, scifact) -> None:
    """One encoding: export (timed apart), cold and warm mining, agreement, and nDCG@10 on SciFact test."""
    export = 0.0
    if spec.backend != "torch":
        _, export = timed(lambda: Encoder(spec, cache).model)  # exports into the model cache, once
    for run, target in (("cold", 0.5 if label != "torch-fp32" else 1.0), ("warm", 0.05)):
        encoder = Encoder(spec, cache)
        result, seconds = timed(lambda encoder=encoder: mine_negatives(triplets, passages, encoder, CONFIG))
        agreement = len(pairs(result.candidates, triplets) & expected) / max(len(expected), 1)
        encode = result.stats.encode.get("document", {})
        print(
            f"arhn {label:14} {run}: {seconds:7.1f} s  ratio {seconds / st_seconds:6.3f} (target <= {target})  "
            f"agreement {agreement:7.2%}  passages encoded {encode.get('encoded', 0)} "
            f"at {encode.get('texts_per_second', 0):.1f}/s"
            + (f"  (export {export:.1f} s, once)" if run == "cold" else "")
        )
    ndcg, seconds = timed(lambda: mean_scores(evaluate(Encoder(spec, cache), scifact))["ndcg@10"])
    print(f"arhn {label:14} SciFact test nDCG@10 {ndcg:.4f} (published 0.6451; {seconds:.1f} s, corpus cached)")


if __name__ == "__main__":
    main()
