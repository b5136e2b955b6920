"""LLM stage benchmark: the embedded backend (SmolLM2-135M-Instruct, transformers, CPU) on SciFact.

Pairs: each of the first N SciFact training queries with its positive passage and two other corpus
passages drawn with a fixed seed, as answer-snippet prompts. Prints, from one run:
1. one prompt at a time vs batched (padding-aware, length-sorted): wall time, ratio, and whether
   the outputs are identical;
2. prefill and decode tokens/s against the ceiling these cores allow: the measured fp32
   matrix-multiply throughput divided by the model's FLOPs per token;
3. the `answer_snippets` stage cold (empty call cache, model loaded) vs warm (every call cached):
   ratio, target >= 50x.

    python benchmarks/llm_stages.py [--data ../shared/data] [--queries 16] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from arhn_assets.core.ingest import ingest  # noqa: E402
from arhn_assets.core.llm.base import GenerationRequest  # noqa: E402
from arhn_assets.core.llm.cache import CallCache  # noqa: E402
from arhn_assets.core.llm.embedded import TransformersBackend  # noqa: E402
from arhn_assets.core.paths import ArhnPaths  # noqa: E402
from arhn_assets.core.prompts import snippet_prompt  # noqa: E402
from arhn_assets.core.beir_io import passage_texts  # noqa: E402
from arhn_assets.workers.llm_stage import run_stage  # noqa: E402


def snippet_pairs(triplets: pl.DataFrame, passages: pl.DataFrame, others: int = 2, seed: int = 13) -> pl.DataFrame:
    rng = random.Random(seed)
    doc_ids = passages["doc_id"].to_list()
    rows = []
    for dataset, query_id, positives in triplets.select("dataset", "query_id", "positive_ids").iter_rows():
        rows += [(dataset, query_id, positives[0], "positive")]
        rows += [(dataset, query_id, d, "mined") for d in rng.sample(doc_ids, others) if d not in positives]
    return pl.DataFrame(rows, schema=["dataset", "query_id", "doc_id", "source"], orient="row")


def matmul_gflops(dtype: torch.dtype, tokens: int = 512, hidden: int = 576, inner: int = 1536, repeats: int = 20) -> float:
    """Throughput of a (tokens x hidden) @ (hidden x inner) product: the shape of the model's MLP."""
    a, b = torch.randn(tokens, hidden, dtype=dtype), torch.randn(hidden, inner, dtype=dtype)
    for _ in range(3):
        a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * tokens * hidden * inner * repeats / (time.perf_counter() - began) / 1e9


def flops_per_token(model) -> tuple[float, float]:
    """(prefill, decode) FLOPs per token: 2 per weight of the transformer blocks' matrices, plus
    the vocabulary projection when the token's logits are computed (every decode step; in prefill
    only for the last prompt token, which is negligible)."""
    blocks = sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in name)
    head = model.get_output_embeddings().weight.numel()
    return 2.0 * blocks, 2.0 * (blocks + head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ARHN_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--compare-pairs", type=int, default=16, help="pairs timed one at a time vs batched")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--models-cache", type=Path, default=Path(os.environ.get("ARHN_HOME", "data")) / "cache" / "models")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arhn-llm-bench-") as home:
        data = ingest("scifact", ArhnPaths(home=Path(home), data_dir=args.data.resolve()), max_queries=args.queries, download=False)
        triplets, passages = data.triplets, data.passages
        pairs = snippet_pairs(triplets, passages)
        texts = passage_texts(passages)
        query_text = dict(triplets.select("query_id", "query_text").iter_rows())
        prompts = [snippet_prompt(query_text[q], texts[d]) for q, d in pairs.select("query_id", "doc_id").iter_rows()]
        requests = [GenerationRequest(p.messages, p.max_new_tokens) for p in prompts]
        backend = TransformersBackend(cache_dir=args.models_cache, batch_size=args.batch_size)
        tokenizer, model = backend._load()  # load (and convert the GGUF once) outside the timings
        backend.generate(requests[:2])  # warm-up: thread pool, allocator
        print(f"SciFact: {len(requests)} (query, passage) pairs from {triplets.height} queries; model {backend.identity}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")

        # 1. One prompt at a time vs batched.
        compared = requests[: args.compare_pairs]
        backend.batch_size = 1
        began = time.perf_counter()
        single = backend.generate(compared)
        single_seconds = time.perf_counter() - began
        backend.batch_size = args.batch_size
        began = time.perf_counter()
        batched = backend.generate(compared)
        batched_seconds = time.perf_counter() - began
        same = sum(a.text == b.text for a, b in zip(single, batched))
        print(f"1. {len(compared)} prompts one at a time: {single_seconds:6.1f} s; batched by {args.batch_size}: "
              f"{batched_seconds:6.1f} s; speed-up {single_seconds / batched_seconds:4.2f}x; identical outputs {same}/{len(compared)}")

        # 2. Prefill and decode rates vs the matmul ceiling. Prefill: one forward pass over each
        # padded batch (real prompt tokens counted); decode: completion tokens over the rest.
        chats = [tokenizer.apply_chat_template(r.as_chat(), tokenize=False, add_generation_prompt=True) for r in compared]
        order = sorted(range(len(chats)), key=lambda i: len(chats[i]))
        prefill_seconds, prompt_tokens = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            encoded = tokenizer([chats[i] for i in order[start : start + args.batch_size]], return_tensors="pt", padding=True, add_special_tokens=False)
            began = time.perf_counter()
            with torch.inference_mode():
                model(**encoded, logits_to_keep=1)
            prefill_seconds += time.perf_counter() - began
            prompt_tokens += int(encoded["attention_mask"].sum())
        completion_tokens = sum(c.completion_tokens for c in batched)
        decode_seconds = max(batched_seconds - prefill_seconds, 1e-9)
        gflops = matmul_gflops(torch.float32)
        prefill_flops, decode_flops = flops_per_token(model)
        prefill_rate, decode_rate = prompt_tokens / prefill_seconds, completion_tokens / decode_seconds
        prefill_ceiling, decode_ceiling = gflops * 1e9 / prefill_flops, gflops * 1e9 / decode_flops
        print(f"2. fp32 matmul {gflops:6.1f} GFLOP/s (bf16 {matmul_gflops(torch.bfloat16):6.1f}); "
              f"{prefill_flops / 1e9:.3f} GFLOP/token prefill, {decode_flops / 1e9:.3f} decode")
        print(f"   prefill {prefill_rate:7.1f} tok/s of a {prefill_ceiling:7.1f} ceiling ({prefill_rate / prefill_ceiling:5.1%}); "
              f"decode {decode_rate:6.1f} tok/s of a {decode_ceiling:7.1f} ceiling ({decode_rate / decode_ceiling:5.1%})")

        # 3. The stage cold (fresh cache, fresh backend: the model load counts) vs warm.
        frames = {"candidates": pairs, "triplets": triplets, "passages": passages}
        options = {"batch_size": args.batch_size}
        cache_path = Path(home) / "calls.sqlite"
        timings = []
        for label in ("cold", "warm"):
            cache = CallCache(cache_path)
            began = time.perf_counter()
            frame, stats = run_stage("answer_snippets", frames, options, TransformersBackend(cache_dir=args.models_cache, batch_size=args.batch_size), cache)
            timings.append(time.perf_counter() - began)
            cache.close()
            print(f"3. answer_snippets {label}: {timings[-1]:7.2f} s, {stats.calls} calls, {stats.cache_hits} cache hits, "
                  f"statuses {dict(frame['status'].value_counts().iter_rows())}")
        print(f"   warm re-materialization {timings[0] / timings[1]:7.0f}x faster than cold (target >= 50x)")


if __name__ == "__main__":
    main()
