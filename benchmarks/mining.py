"""Mining benchmark: arhn vs sentence-transformers' mine_hard_negatives, same run, same settings.

SciFact train queries against the full corpus (5,183 passages), all-MiniLM-L6-v2, relative
margin 0.05, 10 negatives, `top` sampling. Prints wall-time ratios (arhn / sentence-transformers)
cold (empty embedding cache), warm (cache filled), and bf16 cold, with the agreement of the
selected negatives (share of sentence-transformers' (query, negative) pairs arhn also selects).

    python benchmarks/mining.py [--data ../shared/data] [--queries N] [--skip-bf16]
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

from arhn_assets.core.embeddings import Encoder, EncoderSpec, default_model_path  # noqa: E402
from arhn_assets.core.ingest import IngestConfig, ingest
from arhn_assets.core.mining import MiningConfig, mine_negatives  # noqa: E402
from arhn_assets.core.mining_reference import mine_with_sentence_transformers  # noqa: E402
from arhn_assets.core.paths import ArhnPaths  # noqa: E402
from arhn_assets.core.sampling import QuerySample  # noqa: E402

CONFIG = MiningConfig(num_negatives=10, relative_margin=0.05, sampling_strategy="top")


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
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("ARHN_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")),
    )
    parser.add_argument("--queries", type=int, default=None, help="cap on training queries (default: all 809)")
    parser.add_argument("--skip-bf16", action="store_true")
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

        def ours(precision: str, cache: str):
            encoder = Encoder(EncoderSpec(precision=precision), Path(home) / cache)  # type: ignore[arg-type]
            return mine_negatives(triplets, passages, encoder, CONFIG)

        runs = [("fp32 cold", "fp32", "cache-fp32", 1.0), ("fp32 warm", "fp32", "cache-fp32", 0.05)]
        if not args.skip_bf16:
            runs.append(("bf16 cold", "bf16", "cache-bf16", 0.5))
        for label, precision, cache, target in runs:
            result, seconds = timed(lambda precision=precision, cache=cache: ours(precision, cache))
            got = pairs(result.candidates, triplets)
            agreement = len(got & expected) / max(len(expected), 1)
            encode = result.stats.encode.get("document", {})
            print(
                f"arhn {label}: {seconds:7.1f} s  ratio {seconds / st_seconds:6.3f} (target <= {target})  "
                f"agreement {agreement:7.2%}  passages encoded {encode.get('encoded', 0)} "
                f"at {encode.get('texts_per_second', 0):.1f}/s"
            )


if __name__ == "__main__":
    main()
