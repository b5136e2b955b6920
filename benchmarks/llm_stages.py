"""LLM stage benchmark: the embedded llama.cpp backend (xllamacpp) on SciFact, per model preset.

Pairs: each of the first SciFact training queries with its positive passage and other corpus
passages drawn with a fixed seed. For each model (SmolLM2-135M, Qwen2.5-Coder-1.5B), one run prints:
1. prefill and decode tokens/s of llama.cpp (its own timings, one request at a time) against the
   old transformers path (the same GGUF dequantized to fp32, greedy generate), in the same run;
2. parallel slots against one request at a time: wall time, and how many outputs are identical
   (llama.cpp's batched kernels round differently, ggml-org/llama.cpp#6950);
3. stage throughput from an empty call cache: stage-1 pairs per minute in `sentence` and `span`
   mode, stage-2 (listwise) windows per minute.

    python benchmarks/llm_stages.py [--models smollm2-135m qwen2.5-coder-1.5b] [--pairs 12] [--windows 3]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import polars as pl  # noqa: E402

from arhn_assets.core.beir_io import passage_texts  # noqa: E402
from arhn_assets.core.cores import usable_cores  # noqa: E402
from arhn_assets.core.ingest import IngestConfig, ingest  # noqa: E402
from arhn_assets.core.llm.cache import CallCache  # noqa: E402
from arhn_assets.core.llm.llama_cpp import LlamaCppBackend, chat_request  # noqa: E402
from arhn_assets.core.llm.models import PRESETS  # noqa: E402
from arhn_assets.core.paths import ArhnPaths  # noqa: E402
from arhn_assets.core.sampling import QuerySample  # noqa: E402
from arhn_assets.core.snippets import SnippetConfig, snippet_task  # noqa: E402
from arhn_assets.workers.llm_stage import run_stage  # noqa: E402

from common import add_data_argument  # noqa: E402


def candidate_sets(triplets: pl.DataFrame, passages: pl.DataFrame, others: int, seed: int = 13) -> pl.DataFrame:
    """Each query's positive and `others` corpus passages drawn with a fixed seed."""
    rng = random.Random(seed)
    doc_ids = passages["doc_id"].to_list()
    rows = []
    for dataset, query_id, positives in triplets.select("dataset", "query_id", "positive_ids").iter_rows():
        rows += [(dataset, query_id, positives[0], "positive")]
        rows += [(dataset, query_id, d, "mined") for d in rng.sample(doc_ids, others) if d not in positives]
    return pl.DataFrame(rows, schema=["dataset", "query_id", "doc_id", "source"], orient="row")


def sentence_requests(pairs: pl.DataFrame, triplets: pl.DataFrame, passages: pl.DataFrame):
    """The stage-1 requests (sentence mode) of `pairs`, as the stage builds them."""
    texts = passage_texts(passages)
    queries = dict(triplets.select("query_id", "query_text").iter_rows())
    return [
        snippet_task(queries[q], "", texts[d], SnippetConfig()).request
        for q, d in pairs.select("query_id", "doc_id").iter_rows()
    ]


def llama_cpp_rates(backend: LlamaCppBackend, requests) -> tuple[float, float]:
    """(prefill, decode) tokens/s from llama.cpp's own timings, one request at a time."""
    server = backend._load()
    prompt = prompt_ms = decoded = decode_ms = 0.0
    for request in requests:
        free = replace(request, constraint=None, max_new_tokens=32)  # decode speed over free text
        timings = server.handle_chat_completions(chat_request(free))["timings"]
        prompt, prompt_ms = prompt + timings["prompt_n"], prompt_ms + timings["prompt_ms"]
        decoded, decode_ms = decoded + timings["predicted_n"], decode_ms + timings["predicted_ms"]
    return prompt / prompt_ms * 1e3, decoded / decode_ms * 1e3


def transformers_rates(gguf: Path, requests) -> tuple[float, float, float]:
    """(prefill, decode) tokens/s of the old transformers path on the same GGUF (dequantized to
    fp32, greedy, one request at a time), and its load time in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    load_seconds = time.perf_counter() - began
    prompt = prompt_s = decoded = decode_s = 0.0
    for request in requests:
        ids = tokenizer.apply_chat_template(
            request.as_chat(), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            began = time.perf_counter()
            model(**ids, logits_to_keep=1)
            prefill = time.perf_counter() - began
            began = time.perf_counter()
            out = model.generate(
                **ids, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
            total = time.perf_counter() - began
        prompt, prompt_s = prompt + ids["input_ids"].shape[1], prompt_s + prefill
        new = out.shape[1] - ids["input_ids"].shape[1]
        decoded, decode_s = decoded + new, decode_s + max(total - prefill, 1e-9)
    return prompt / prompt_s, decoded / decode_s, load_seconds


def stage_rate(
    stage: str, frames: dict, options: dict, backend: LlamaCppBackend, cache_path: Path
) -> tuple[float, int]:
    cache = CallCache(cache_path)
    began = time.perf_counter()
    _, stats = run_stage(stage, frames, options, backend, cache, batch_size=8)
    cache.close()
    return time.perf_counter() - began, stats.calls


def bench_model(name: str, args, triplets, passages, home: Path) -> None:
    pairs = candidate_sets(triplets, passages, others=2).head(args.pairs)
    requests = sentence_requests(pairs, triplets, passages)
    one = LlamaCppBackend(name, args.models_cache, parallel=1)
    one.generate(requests[:1])  # load and warm up outside the timings
    print(f"\n## {name} ({one.identity}), {len(requests)} SciFact stage-1 prompts, {usable_cores()} threads")

    prefill, decode = llama_cpp_rates(one, requests)
    old_prefill, old_decode, load = transformers_rates(
        PRESETS[name].path(args.models_cache), requests[: max(2, len(requests) // 3)]
    )
    print(
        f"1. llama.cpp: prefill {prefill:6.1f} tok/s, decode {decode:5.1f} tok/s | transformers fp32 (old path, "
        f"{load:.0f} s to load): prefill {old_prefill:6.1f} tok/s, decode {old_decode:5.1f} tok/s | "
        f"ratios {prefill / old_prefill:4.2f}x, {decode / old_decode:4.2f}x"
    )

    began = time.perf_counter()
    single = one.generate(requests)
    single_seconds = time.perf_counter() - began
    one.close()
    slots = LlamaCppBackend(name, args.models_cache, parallel=args.parallel)
    slots.generate(requests[:1])
    began = time.perf_counter()
    parallel = slots.generate(requests)
    parallel_seconds = time.perf_counter() - began
    slots.close()
    same = sum(a.text == b.text for a, b in zip(single, parallel))
    print(
        f"2. one at a time {single_seconds:6.1f} s; {args.parallel} slots {parallel_seconds:6.1f} s "
        f"({single_seconds / parallel_seconds:4.2f}x); identical outputs {same}/{len(requests)}"
    )

    frames = {"candidates": pairs, "triplets": triplets, "passages": passages}
    backend = LlamaCppBackend(name, args.models_cache, parallel=1)
    rates = []
    for mode in ("sentence", "span"):
        seconds, calls = stage_rate("answer_snippets", frames, {"mode": mode}, backend, home / f"{name}-{mode}.sqlite")
        rates.append(f"stage 1 {mode}: {calls / seconds * 60:5.1f} pairs/min")
    windows = candidate_sets(triplets, passages, others=10).filter(
        pl.col("query_id").is_in(triplets["query_id"].head(args.windows).implode())
    )
    seconds, calls = stage_rate(
        "answerability_rankings",
        {**frames, "candidates": windows, "snippets": None},
        {},
        backend,
        home / f"{name}-rank.sqlite",
    )
    rates.append(f"stage 2: {calls / seconds * 60:5.2f} windows/min ({windows.height // max(1, calls)} passages each)")
    print("3. " + "; ".join(rates))
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(parser)
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--pairs", type=int, default=12, help="stage-1 prompts timed per measurement")
    parser.add_argument("--windows", type=int, default=3, help="stage-2 windows (11 passages each) timed")
    parser.add_argument("--parallel", type=int, default=2, help="slots compared with one request at a time")
    parser.add_argument(
        "--models-cache", type=Path, default=Path(os.environ.get("ARHN_HOME", "data")) / "cache" / "models"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arhn-llm-bench-") as home:
        data = ingest(
            "scifact",
            ArhnPaths(home=Path(home), data_dir=args.data.resolve()),
            IngestConfig(download=False, instruction=""),
            QuerySample(max(args.pairs, args.windows)),
        )
        for name in args.models:
            bench_model(name, args, data.triplets, data.passages, Path(home))


if __name__ == "__main__":
    main()
