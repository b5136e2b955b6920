"""Search benchmark: FAISS recall on SciFact, and exact mining and retrieval over 2M passages.

    python benchmarks/search_scale.py recall [--data ../shared/data] [--cache DIR]
    python benchmarks/search_scale.py scale [--passages 2000000] [--queries 1000] [--work DIR]
    python benchmarks/search_scale.py            # both

`recall`: SciFact's corpus (5,183 passages) and its 1,109 queries encoded once through arhn's
Encoder (all-MiniLM-L6-v2; ~3 minutes on one core, then cached in --cache), searched exactly and
with each FAISS index (`core/search.py`: trained on the corpus read from the cache's shards, with
nprobe / efSearch, with and without the exact re-rank). Recall@10 and @100 of each against exact
search (the share of exact search's top-k it returns), and its build + search time.

`scale`: N random unit vectors (dimension 384) written straight into the embedding cache's shards,
keyed by the hashes of short passage texts ("passage i"), as the encoder would have filled it
(2,048 per shard, longest text first), so nothing is encoded; 1,000 queries with one positive
each (the query's vector is its positive's plus noise). Then, each in its own process so the
figures do not mix: mining (`mine_negatives`, exact search, default settings) and evaluation's
retrieval (`retrieve`, top 100). Peak RSS is the process's ru_maxrss; "before search" is its peak
once the frames are built, before the call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from arhn_assets.core.beir_io import BeirDataset, load_beir_dataset, passage_text  # noqa: E402
from arhn_assets.core.embeddings import DEFAULT_CHUNK_SIZE, Encoder, EncoderSpec, text_hash  # noqa: E402
from arhn_assets.core.evaluation import EvaluationConfig, retrieve  # noqa: E402
from arhn_assets.core.mining import MiningConfig, mine_negatives  # noqa: E402
from arhn_assets.core.search import exact_search, faiss_search  # noqa: E402

from common import default_data_dir  # noqa: E402

DIM = 384
# (label, factory, options): options of faiss_search
INDEXES = [
    ("Flat", "Flat", {}),
    ("HNSW32, efSearch 16", "HNSW32", {"ef_search": 16}),
    ("HNSW32, efSearch 64", "HNSW32", {"ef_search": 64}),
    ("HNSW32, efSearch 128", "HNSW32", {"ef_search": 128}),
    ("IVF64,Flat, nprobe 1", "IVF64,Flat", {"nprobe": 1}),
    ("IVF64,Flat, nprobe 8", "IVF64,Flat", {"nprobe": 8}),
    ("IVF64,Flat, nprobe 16", "IVF64,Flat", {"nprobe": 16}),
    ("IVF256,Flat, nprobe 8", "IVF256,Flat", {"nprobe": 8}),
    ("IVF256,Flat, nprobe 32", "IVF256,Flat", {"nprobe": 32}),
    ("IVF256,PQ32, nprobe 32", "IVF256,PQ32", {"nprobe": 32}),
    ("IVF256,PQ32, nprobe 32, re-rank 200", "IVF256,PQ32", {"nprobe": 32, "rerank_depth": 200}),
    ("IVF256,PQ32, nprobe 32, re-rank 500", "IVF256,PQ32", {"nprobe": 32, "rerank_depth": 500}),
    ("IVF64,PQ32, nprobe 16, re-rank 200", "IVF64,PQ32", {"nprobe": 16, "rerank_depth": 200}),
]


def recall_at(rows, exact, k: int) -> float:
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(rows, exact)]))


def faiss_recall(data: Path, cache: Path) -> dict:
    scifact = load_beir_dataset("scifact", [data / "scifact"], download=False)
    encoder = Encoder(EncoderSpec(), cache)
    texts = [passage_text(t, x) for t, x in scifact.corpus.select("title", "text").iter_rows()]
    started = time.perf_counter()
    corpus = encoder.embeddings(texts, "document")
    queries = encoder.encode(scifact.queries["text"].to_list(), "query")
    print(
        f"SciFact: {corpus.shape[0]} passages, {len(queries)} queries, all-MiniLM-L6-v2 "
        f"({encoder.stats['document'].encoded} passages encoded, {time.perf_counter() - started:.0f} s)"
    )
    started = time.perf_counter()
    exact = exact_search(queries, corpus, 100, 8192, 4096)
    exact_seconds = time.perf_counter() - started
    print(f"exact search: {exact_seconds:.2f} s\n")
    rows_out = []
    print("| index | recall@10 | recall@100 | build + search |")
    print("|---|---:|---:|---:|")
    for label, factory, options in INDEXES:
        started = time.perf_counter()
        _, rows = faiss_search(queries, corpus, 100, factory, chunk_size=8192, train_size=100_000, **options)
        seconds = time.perf_counter() - started
        r10, r100 = recall_at(rows, exact.indices, 10), recall_at(rows, exact.indices, 100)
        print(f"| {label} | {r10:.4f} | {r100:.4f} | {seconds:.2f} s |", flush=True)
        rows_out.append({"index": label, "factory": factory, **options, "recall@10": r10, "recall@100": r100})
        rows_out[-1]["build_and_search_seconds"] = round(seconds, 2)
    return {
        "corpus": "SciFact test corpus, all-MiniLM-L6-v2",
        "passages": corpus.shape[0],
        "queries": len(queries),
        "exact_search_seconds": round(exact_seconds, 2),
        "indexes": rows_out,
    }


def synthetic_frames(passages: int, queries: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Passages p0..p{N-1} ("passage i") and queries q0.. ("query i") with one positive each."""
    number = pl.int_range(passages, eager=True).cast(pl.String)
    corpus = pl.DataFrame(
        {"doc_id": "p" + number, "title": pl.repeat("", passages, eager=True), "text": "passage " + number}
    )
    positives = np.random.default_rng(seed).choice(passages, size=queries, replace=False)
    triplets = pl.DataFrame(
        {
            "dataset": ["synthetic"] * queries,
            "query_id": [f"q{i}" for i in range(queries)],
            "query_text": [f"query {i}" for i in range(queries)],
            "positive_ids": [[f"p{p}"] for p in positives],
            "provided_negative_ids": [[] for _ in range(queries)],
            "instruction": [""] * queries,
        },
        schema_overrides={"provided_negative_ids": pl.List(pl.String)},
    )
    return corpus, triplets


def fill_cache(cache: Path, passages: int, queries: int, seed: int = 0) -> None:
    """Random unit vectors in the cache's shards, as the encoder would have written them."""
    corpus, triplets = synthetic_frames(passages, queries, seed)
    encoder = Encoder(EncoderSpec(), cache)
    store = encoder.store("document")
    texts = [passage_text(t, x) for t, x in corpus.select("title", "text").iter_rows()]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # the encoder's order: longest first
    hashes = [text_hash(texts[i]) for i in order]
    for number, start in enumerate(range(0, passages, DEFAULT_CHUNK_SIZE)):
        vectors = np.random.default_rng([seed, number]).standard_normal(
            (len(hashes[start : start + DEFAULT_CHUNK_SIZE]), DIM), dtype=np.float32
        )
        store.add(hashes[start : start + DEFAULT_CHUNK_SIZE], vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    positives = store.get([text_hash(passage_text("", f"passage {ids[0][1:]}")) for ids in triplets["positive_ids"]])
    noise = np.random.default_rng([seed, 2**32 - 1]).standard_normal(positives.shape, dtype=np.float32) / np.sqrt(DIM)
    vectors = positives + 0.8 * noise
    query_store = encoder.store("query")
    query_store.add(
        [text_hash(t) for t in triplets["query_text"]], vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def vm_hwm_mb() -> float:
    """The process's peak resident set (VmHWM), as /proc reports it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(kind: str, cache: Path, passages: int, queries: int, chunk: int) -> dict:
    """One run in this process: its peak RSS before and after the call, its wall time."""
    if kind == "fill":
        started = time.perf_counter()
        fill_cache(cache, passages, queries)
        return {"before_mb": 0.0, "peak_mb": peak_rss_mb(), "seconds": time.perf_counter() - started, "result": ""}
    corpus, triplets = synthetic_frames(passages, queries)
    encoder = Encoder(EncoderSpec(), cache)
    before = peak_rss_mb()
    started = time.perf_counter()
    if kind == "mine":
        result = mine_negatives(triplets, corpus, encoder, MiningConfig(corpus_chunk_size=chunk))
        mined = result.candidates.filter(pl.col("source") == "mined")
        positives = result.candidates.filter(pl.col("source") == "positive")
        summary = f"{mined.height} negatives, positive rank median {positives['rank'].median():.0f}"
    else:
        beir = BeirDataset("synthetic", cache, corpus, triplets.select("query_id", text="query_text"))
        query_ids = triplets["query_id"].to_list()
        run = retrieve(encoder, beir, query_ids, EvaluationConfig(top_k=100, corpus_chunk_size=chunk))
        found = sum(ids[0] in run[q] for q, ids in zip(query_ids, triplets["positive_ids"]))
        summary = f"{sum(len(hits) for hits in run.values())} hits, positive in top 100 for {found}/{len(query_ids)}"
    seconds = time.perf_counter() - started
    encoded = sum(s.encoded for s in encoder.stats.values())
    return {
        "before_mb": before,
        "peak_mb": peak_rss_mb(),
        "seconds": seconds,
        "result": f"{summary}; encoded {encoded}",
        "vm_hwm_mb": vm_hwm_mb(),
    }


def in_subprocess(kind: str, cache: Path, passages: int, queries: int, chunk: int) -> dict:
    command = [sys.executable, __file__, "measure", kind, str(cache), str(passages), str(queries), str(chunk)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{kind} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scale(passages: int, queries: int, chunks: list[int], work: Path | None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="arhn-scale-", dir=work) as folder:
        cache = Path(folder) / "embeddings"
        print(f"{passages:,} passages (random unit vectors, dim {DIM}), {queries:,} queries, one process per run\n")
        print("| run | corpus chunk | peak RSS | of which before the call | wall time | result |")
        print("|---|---:|---:|---:|---:|---|")
        results = []
        runs = [("fill", DEFAULT_CHUNK_SIZE)] + [(kind, chunk) for chunk in chunks for kind in ("mine", "retrieve")]
        for kind, chunk in runs:
            figures = in_subprocess(kind, cache, passages, queries, chunk)
            label = {
                "fill": "write the cache's shards",
                "mine": "mine_negatives (exact)",
                "retrieve": "retrieve (top 100)",
            }
            print(
                f"| {label[kind]} | {chunk if kind != 'fill' else '-'} | {figures['peak_mb']:,.0f} MB | "
                f"{figures['before_mb']:,.0f} MB | {figures['seconds']:.1f} s | {figures['result']} |",
                flush=True,
            )
            results.append({"run": label[kind], "corpus_chunk_size": chunk if kind != "fill" else None, **figures})
    return results


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "measure":
        kind, cache, passages, queries, chunk = sys.argv[2:7]
        print(json.dumps(measure(kind, Path(cache), int(passages), int(queries), int(chunk))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", nargs="?", choices=["recall", "scale", "both"], default="both")
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument(
        "--cache", type=Path, default=None, help="embedding cache for SciFact (default: a temporary one)"
    )
    parser.add_argument("--passages", type=int, default=2_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--chunks", type=int, nargs="+", default=[8192], help="corpus chunk sizes to measure")
    parser.add_argument(
        "--work", type=Path, default=None, help="where the synthetic cache is written (~1.6 KB per passage)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    report: dict = {"cpus": os.cpu_count(), "uptime_before": uptime()}
    started = time.perf_counter()
    if args.part in ("scale", "both"):
        report["scale"] = {
            "passages": args.passages,
            "queries": args.queries,
            "dim": DIM,
            "runs": scale(args.passages, args.queries, args.chunks, args.work),
        }
        print()
    if args.part in ("recall", "both"):
        with tempfile.TemporaryDirectory(prefix="arhn-recall-") as folder:
            report["faiss_recall"] = faiss_recall(args.data.resolve(), args.cache or Path(folder) / "embeddings")
    report["uptime_after"] = uptime()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
