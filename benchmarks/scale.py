"""Sizing on paper: the tokens arhn's two LLM stages send, measured on SciFact, projected to the
paper's scale and turned into GPU-hours at published vLLM throughputs. Runs on CPU, offline.

What is measured (the first `--queries` SciFact training queries, default 200):
- candidates: each query's positives and its mined negatives, mined as the pipeline does
  (`mine_negatives`, default `MiningConfig`, the packaged all-MiniLM-L6-v2 through the embedding
  cache; ~3 minutes on one core the first time), or `--random-negatives` (10 random passages);
- stage 1: one request per (query, candidate), built by `snippet_task` in sentence and span mode;
- stage 2: the windows `rank_with_sliding_windows` asks for (window 20, step 10, candidates
  shuffled per query as the stage does), each prompt built by `ranking_prompt`;
- tokens: the chat-formatted prompt counted with the Qwen2.5 tokenizer stored in the packaged
  `qwen2.5-coder-1.5b` GGUF, plus the 4 tokens of Qwen3's empty thinking block
  (`<think>\\n\\n</think>\\n\\n`, added by its chat template when thinking is off). Qwen3 uses the
  same byte-level BPE vocabulary as Qwen2.5 (it adds special tokens such as <think>), so the counts
  are an approximation of Qwen3's, not Qwen3's own;
- completions (no model runs here): a negative answers NO_ANSWER; a positive answers with its
  SciFact evidence sentences (their numbers in sentence mode, their text in span mode, capped at
  the template's max_new_tokens); a ranking is the full `[a] > [b] > ...` of its window; each plus
  the end-of-turn token. The completion budgets (max_new_tokens) are printed as the upper bound.

Projection: `--pairs` stage-1 calls (the paper's 1.6M); the queries they come from
(pairs / measured candidates per query), and their stage-2 windows. GPU-hours = tokens (in + out)
/ the total token throughput of the published run whose shape is closest to these requests
(2,000 input / 100 output tokens): a saturated offline batch spends a GPU on both kinds of token.

    python benchmarks/scale.py [--data ../shared/data] [--queries 200] [--pairs 1600000] [--random-negatives]
        [--models-cache DIR] [--json benchmarks/results/scale.json]

`--json` also writes the measurements and the projection as JSON (benchmarks/results/scale.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import polars as pl  # noqa: E402

from arhn_assets.core.beir_io import passage_texts  # noqa: E402
from arhn_assets.core.embeddings import Encoder, EncoderSpec  # noqa: E402
from arhn_assets.core.ingest import IngestConfig, ingest  # noqa: E402
from arhn_assets.core.llm.models import PRESETS  # noqa: E402
from arhn_assets.core.mining import MiningConfig, judged, mine_negatives  # noqa: E402
from arhn_assets.core.parsing import RankingParse  # noqa: E402
from arhn_assets.core.paths import ArhnPaths  # noqa: E402
from arhn_assets.core.prompts import load_template, ranking_prompt  # noqa: E402
from arhn_assets.core.rankings import RankingConfig, WindowRequest, rank_with_sliding_windows, shuffled  # noqa: E402
from arhn_assets.core.sampling import QuerySample  # noqa: E402
from arhn_assets.core.snippets import SnippetConfig, snippet_task, split_sentences  # noqa: E402

from common import add_data_argument  # noqa: E402

TOKENIZER_PRESET = "qwen2.5-coder-1.5b"
QWEN3_NO_THINK_TOKENS = 4  # <think>, "\n\n", </think>, "\n\n": one token each in Qwen3's vocabulary
END_OF_TURN = 1  # <|im_end|>, which ends every completion


@dataclass(frozen=True)
class Throughput:
    """One published serving run: what it measured, where, and for which model it stands in."""

    model: str  # the model this figure is used for
    measured_on: str  # what the source ran
    input_tokens: int
    output_tokens: int
    seconds: float
    url: str
    note: str

    @property
    def input_rate(self) -> float:
        return self.input_tokens / self.seconds

    @property
    def output_rate(self) -> float:
        return self.output_tokens / self.seconds

    @property
    def total_rate(self) -> float:
        return (self.input_tokens + self.output_tokens) / self.seconds


# GPUStack's performance lab, "baseline (vLLM without any optimizations)": `vllm serve <model>`
# (vLLM v0.11.0, BF16, tensor parallel 1 on one H100), `vllm bench serve --dataset-name random
# --random-input-len 2000 --random-output-len 100 --num-prompts 500`: 998,175 input and 50,000
# output tokens. No such page exists for Qwen3-8B, so Qwen3-14B's (same lab, same vLLM, same run,
# one H100 SXM) stands in for it: a larger model, so a conservative figure for Qwen3-8B.
THROUGHPUTS = (
    Throughput(
        "Qwen3-8B",
        "Qwen3-14B BF16, TP 1, one H100 SXM, vLLM v0.11.0",
        998_175,
        50_000,
        98.91,
        "https://docs.gpustack.ai/latest/performance-lab/qwen3-14b/h100 "
        "(source: github.com/gpustack/gpustack docs/performance-lab/qwen3-14b/h100.md)",
        "no published vLLM throughput run of Qwen3-8B on one H100 in this shape was found; Qwen3-14B's "
        "is used (conservative). Cross-check: silybench (github.com/tgarg01/silybench-data, "
        "derived/index.json, Qwen/Qwen3-8B BF16, TP 1, H100-80GB, vLLM 0.30.0) reports 3,017.7 output "
        "tok/s for 1,024-input/128-output requests at its latency SLO (p99 TTFT 2 s), i.e. ~24,100 "
        "input tok/s, about 2.6x the figure used here",
    ),
    Throughput(
        "Qwen3-32B",
        "Qwen3-32B BF16, TP 1, one H100, vLLM v0.11.0",
        998_175,
        50_000,
        328.04,
        "https://docs.gpustack.ai/latest/performance-lab/qwen3-32b/h100 "
        "(source: github.com/gpustack/gpustack docs/performance-lab/qwen3-32b/h100.md)",
        "BF16 weights (~65 GB) leave ~6 GB of KV cache on an 80 GB card: the figure is KV-starved, "
        "hence TP 2 or FP8 below. The same page measures FP8 weights at +50.6% throughput (ShareGPT, "
        "in its optimized engine, not vLLM)",
    ),
)


@dataclass
class Tokens:
    """Per-request token counts of one kind of request."""

    prompt: list[int]
    completion: list[int]  # the estimate described in the module docstring
    budget: list[int]  # max_new_tokens: the most a completion can take

    def add(self, prompt: int, completion: int, budget: int) -> None:
        self.prompt.append(prompt)
        self.completion.append(completion)
        self.budget.append(budget)

    @property
    def mean_in(self) -> float:
        return statistics.fmean(self.prompt)

    @property
    def mean_out(self) -> float:
        return statistics.fmean(self.completion)

    def line(self, name: str) -> str:
        p = sorted(self.prompt)
        return (
            f"{name}: {len(p)} requests; prompt tokens mean {self.mean_in:,.0f}, p50 {p[len(p) // 2]:,}, "
            f"p95 {p[int(len(p) * 0.95)]:,}, max {p[-1]:,}; completion tokens est. {self.mean_out:.1f} "
            f"(budget {statistics.fmean(self.budget):.0f})"
        )


class Counter:
    """Counts a chat request's tokens with the Qwen tokenizer of the packaged GGUF."""

    def __init__(self, models_cache: Path):
        from transformers import AutoTokenizer

        gguf = PRESETS[TOKENIZER_PRESET].path(models_cache)
        self.source = gguf
        self.tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    def prompt(self, messages: tuple[tuple[str, str], ...]) -> int:
        chat = [{"role": role, "content": content} for role, content in messages]
        ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return len(ids) + QWEN3_NO_THINK_TOKENS

    def text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


def candidates(triplets: pl.DataFrame, passages: pl.DataFrame, args) -> tuple[pl.DataFrame, str]:
    """The judged (query, candidate) rows and how they were made."""
    if args.random_negatives:
        rng, doc_ids, rows = random.Random(13), passages["doc_id"].to_list(), []
        for dataset, query_id, positives in triplets.select("dataset", "query_id", "positive_ids").iter_rows():
            rows += [(dataset, query_id, p, "positive") for p in positives]
            rows += [(dataset, query_id, d, "mined") for d in rng.sample(doc_ids, 10) if d not in positives]
        frame = pl.DataFrame(rows, schema=["dataset", "query_id", "doc_id", "source"], orient="row")
        return frame, "positives + 10 random corpus passages per query (--random-negatives, not mined)"
    encoder = Encoder(EncoderSpec(), args.embeddings_cache)
    mined = mine_negatives(triplets, passages, encoder, MiningConfig())
    how = "positives + negatives mined by mine_negatives (default MiningConfig, all-MiniLM-L6-v2)"
    return judged(mined.candidates), how


def evidence(data_dir: Path) -> dict[tuple[str, str], list[int]]:
    """(query, doc) -> SciFact's evidence sentence indices (0-based, in the abstract)."""
    found = {}
    for line in (data_dir / "scifact" / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for doc_id, items in (row.get("metadata") or {}).items():
            found[(row["_id"], doc_id)] = sorted({s for item in items for s in item.get("sentences", [])})
    return found


def stage_one(rows, queries, texts, abstracts, evidence_of, counter: Counter, mode: str) -> Tokens:
    config = SnippetConfig(mode=mode)
    spec = load_template("answer_sentence" if mode == "sentence" else "answer_snippet")
    no_answer = counter.text(spec["no_answer_token"])
    tokens = Tokens([], [], [])
    for query_id, doc_id, source in rows:
        task = snippet_task(*queries[query_id], texts[doc_id], config)
        out = no_answer
        if source == "positive":
            ids = evidence_of.get((query_id, doc_id)) or [0]
            if mode == "sentence":
                out = counter.text(str(ids[0] + 1) if len(ids) == 1 else f"{ids[0] + 1}-{ids[-1] + 1}")
            else:
                spans = split_sentences(abstracts[doc_id]) or [(0, len(abstracts[doc_id]))]
                chosen = [abstracts[doc_id][a:b] for i, (a, b) in enumerate(spans) if i in ids] or [abstracts[doc_id]]
                out = counter.text(" ".join(chosen))
        budget = task.request.max_new_tokens
        tokens.add(counter.prompt(task.request.messages), min(out, budget) + END_OF_TURN, budget)
    return tokens


def stage_two(rows, queries, texts, counter: Counter) -> tuple[Tokens, dict[str, int], list[int], float, float]:
    """Tokens of every window the stage would ask for, windows per query, passages per window, and
    a window's fixed and per-passage prompt tokens (to rescale to other window sizes)."""
    config = RankingConfig()
    sets: dict[str, list[str]] = {}
    for query_id, doc_id, _ in rows:
        sets.setdefault(query_id, []).append(doc_id)
    tokens, sizes, fixed, per_passage = Tokens([], [], []), [], [], []

    def judge(requests: list[WindowRequest]) -> list[RankingParse]:
        for r in requests:
            query, instruction = queries[r.query_id]
            prompt = ranking_prompt(query, [texts[d] for d in r.doc_ids], config.max_words, instruction)
            empty = counter.prompt(ranking_prompt(query, [], config.max_words, instruction).messages)
            n = counter.prompt(prompt.messages)
            order = list(range(len(r.doc_ids)))
            random.Random(r.query_id).shuffle(order)  # a ranking's length, not its order, is what counts
            answer = " > ".join(f"[{i + 1}]" for i in order)
            tokens.add(n, counter.text(answer) + END_OF_TURN, prompt.max_new_tokens)
            sizes.append(len(r.doc_ids))
            fixed.append(empty)
            per_passage.append((n - empty) / len(r.doc_ids))
        return [RankingParse(list(range(len(r.doc_ids))), "ok") for r in requests]

    shuffled_sets = {q: shuffled(q, docs, config.seed) for q, docs in sets.items()}
    results = rank_with_sliding_windows(shuffled_sets, judge, config.window_size, config.step)
    windows = {q: result.windows for q, result in results.items()}
    return tokens, windows, sizes, statistics.fmean(fixed), statistics.fmean(per_passage)


def hours(tokens: float, rate: float) -> float:
    return tokens / rate / 3600


def fmt(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:,.2f}{unit}"
    return f"{n:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(parser)
    parser.add_argument("--queries", type=int, default=200, help="SciFact training queries measured")
    parser.add_argument("--pairs", type=int, default=1_600_000, help="stage-1 calls to project to (the paper's)")
    parser.add_argument("--random-negatives", action="store_true", help="skip mining: 10 random passages each")
    home = Path(os.environ.get("ARHN_HOME", "data"))
    parser.add_argument("--models-cache", type=Path, default=home / "cache" / "models")
    parser.add_argument("--embeddings-cache", type=Path, default=home / "cache" / "embeddings")
    parser.add_argument("--json", type=Path, help="also write the measurements and projection here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arhn-scale-") as tmp:
        data = ingest(
            "scifact",
            ArhnPaths(home=Path(tmp), data_dir=args.data.resolve()),
            IngestConfig(download=False),
            QuerySample(args.queries),
        )
    triplets, passages = data.triplets, data.passages
    judged_rows, how = candidates(triplets, passages, args)
    counter = Counter(args.models_cache)
    queries = {q: (t, i or "") for q, t, i in triplets.select("query_id", "query_text", "instruction").iter_rows()}
    texts = passage_texts(passages)
    abstracts = dict(passages.select("doc_id", "text").iter_rows())
    rows = judged_rows.select("query_id", "doc_id", "source").rows()
    evidence_of = evidence(args.data)

    sentence = stage_one(rows, queries, texts, abstracts, evidence_of, counter, "sentence")
    span = stage_one(rows, queries, texts, abstracts, evidence_of, counter, "span")
    stage2 = stage_two(rows, queries, texts, counter)
    result = report(args, triplets, how, counter, rows, sentence, span, stage2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwritten: {args.json}")


def summary(t: Tokens) -> dict:
    p = sorted(t.prompt)
    return {
        "requests": len(p),
        "prompt_mean": round(t.mean_in, 1),
        "prompt_p50": p[len(p) // 2],
        "prompt_p95": p[int(len(p) * 0.95)],
        "prompt_max": p[-1],
        "completion_mean_est": round(t.mean_out, 2),
        "completion_budget_mean": round(statistics.fmean(t.budget), 1),
    }


def report(args, triplets, how, counter, rows, sentence, span, stage2) -> dict:
    windows, per_query, sizes, fixed, per_passage = stage2
    candidates_per_query = len(rows) / triplets.height
    windows_per_query = statistics.fmean(per_query.values())
    passages_per_window = statistics.fmean(sizes)
    queries = args.pairs / candidates_per_query
    n_windows = queries * windows_per_query
    print(f"# arhn at the paper's scale, measured on SciFact ({triplets.height} training queries)\n")
    print(f"candidates: {how}: {len(rows):,} (query, passage) pairs, {candidates_per_query:.2f} per query")
    print(f"tokenizer: Qwen2.5 BPE from {counter.source.name} (+{QWEN3_NO_THINK_TOKENS} for Qwen3's empty think)")
    print("- " + sentence.line("stage 1, sentence mode (per pair)"))
    print("- " + span.line("stage 1, span mode (per pair)"))
    print("- " + windows.line("stage 2, one window"))
    print(
        f"- stage 2: {windows_per_query:.2f} windows per query (window 20, step 10); a window's prompt "
        f"~ {fixed:,.0f} + {per_passage:,.1f} x passages tokens (so a full 20-passage window ~ "
        f"{fixed + 20 * per_passage:,.0f})"
    )
    print(
        f"\nprojection: {args.pairs:,} stage-1 pairs = {queries:,.0f} queries x {candidates_per_query:.2f} "
        f"candidates; stage 2: {n_windows:,.0f} windows of ~{passages_per_window:.1f} passages"
    )
    stages = {
        "stage 1, sentence mode": (args.pairs, sentence),
        "stage 1, span mode": (args.pairs, span),
        "stage 2 (listwise windows)": (n_windows, windows),
    }
    totals = {
        name: (calls * t.mean_in, calls * t.mean_out, calls * statistics.fmean(t.budget))
        for name, (calls, t) in stages.items()
    }
    for name, (tin, tout, tmax) in totals.items():
        print(f"- {name}: {fmt(tin)} in, {fmt(tout)} out (at most {fmt(tmax)} out)")
    print("\nthroughput used (tokens/s on one GPU; GPU-hours = (in + out) / total):")
    for t in THROUGHPUTS:
        print(
            f"- {t.model}: {t.measured_on}; 2,000-in/100-out: input {t.input_rate:,.0f} tok/s, output "
            f"{t.output_rate:,.1f} tok/s, total {t.total_rate:,.0f} tok/s ({t.input_tokens:,} + "
            f"{t.output_tokens:,} tokens in {t.seconds} s)\n  {t.url}\n  note: {t.note}"
        )
    table(totals, args, windows.mean_in)
    return {
        "dataset": "scifact",
        "queries_measured": triplets.height,
        "candidates": how,
        "pairs_measured": len(rows),
        "candidates_per_query": round(candidates_per_query, 3),
        "tokenizer": f"Qwen2.5 BPE from {counter.source.name} (+{QWEN3_NO_THINK_TOKENS} for Qwen3's empty think)",
        "per_request": {
            "stage1_sentence_per_pair": summary(sentence),
            "stage1_span_per_pair": summary(span),
            "stage2_per_window": summary(windows),
        },
        "stage2_windows_per_query": round(windows_per_query, 3),
        "stage2_passages_per_window": round(passages_per_window, 2),
        "stage2_window_prompt_fixed": round(fixed, 1),
        "stage2_window_prompt_per_passage": round(per_passage, 2),
        "projection": {
            "pairs": args.pairs,
            "queries": round(queries),
            "stage2_windows": round(n_windows),
            "tokens": {
                name: {"in": round(tin), "out_est": round(tout), "out_max": round(tmax)}
                for name, (tin, tout, tmax) in totals.items()
            },
        },
        "throughputs": [
            {
                "model": t.model,
                "measured_on": t.measured_on,
                "total_tokens_per_s": round(t.total_rate),
                "input_tokens_per_s": round(t.input_rate),
                "output_tokens_per_s": round(t.output_rate, 1),
                "url": t.url,
                "note": t.note,
                "gpu_hours": {
                    name: round(hours(tin + tout, t.total_rate), 1) for name, (tin, tout, _) in totals.items()
                },
            }
            for t in THROUGHPUTS
        ],
    }


def table(totals: dict[str, tuple[float, float, float]], args, window_tokens: float) -> None:
    """The markdown table (tokens; GPU-hours per model; settings) and why those settings."""
    names = list(totals)
    sentence, span, windows = (totals[n] for n in names)
    both = ((span[0] + windows[0], span[1] + windows[1]), (sentence[0] + windows[0], sentence[1] + windows[1]))
    rows = ["| | " + " | ".join(names) + " | both stages (span / sentence mode) |", "|---" * (len(names) + 2) + "|"]
    cells = [f"{fmt(tin)} in, {fmt(tout)} out" for tin, tout, _ in totals.values()]
    cells.append(" / ".join(f"{fmt(tin)} in, {fmt(tout)} out" for tin, tout in both))
    rows.append(f"| tokens, {args.pairs / 1e6:g}M pairs | " + " | ".join(cells) + " |")
    gpu = [
        "; ".join(f"{t.model} {hours(i + o, t.total_rate):,.0f}" for t in THROUGHPUTS) for i, o, _ in totals.values()
    ]
    gpu.append(
        "; ".join(
            f"{t.model} " + " / ".join(f"{hours(i + o, t.total_rate):,.0f}" for i, o in both) for t in THROUGHPUTS
        )
    )
    rows.append("| H100 GPU-hours (vLLM, BF16, figures below) | " + " | ".join(gpu) + " |")
    settings = (
        "Qwen3-8B: `tensor_parallel_size: 1`, `ray_replicas` = GPUs (one engine per GPU). Qwen3-32B on 80 GB "
        "cards: `tensor_parallel_size: 2`, `ray_replicas` = GPUs / 2; or `Qwen/Qwen3-32B-FP8` (or BF16 on "
        "141 GB H200s) with TP 1, one replica per GPU. `max_model_len: 8192`"
    )
    rows.append(f"| settings | {settings} |" + " same |" * len(names))
    print("\n## Table (markdown)\n")
    print("\n".join(rows))
    nodes = 4 * 8
    print(
        "\nWall clock = GPU-hours / GPUs (independent replicas): on 4 nodes of 8 GPUs, both stages (span) take "
        + "; ".join(f"{t.model} ~{hours(both[0][0] + both[0][1], t.total_rate) / nodes:,.1f} h" for t in THROUGHPUTS)
        + "."
    )
    kv_tokens = 6 * 2**30 / (256 * 2**10)
    print(
        "Why these settings: Qwen3-8B's BF16 weights (~16 GB) leave ~55 GB of KV cache on an 80 GB H100 at "
        "gpu_memory_utilization 0.9 (144 KiB per token: ~400k tokens), so independent replicas beat splitting "
        "the model (tensor parallelism adds an all-reduce per layer and buys nothing once the model fits). "
        "Qwen3-32B's BF16 weights (~65 GB) leave ~6 GB: at 256 KiB per token that is "
        f"~{kv_tokens / 1e3:,.0f}k tokens, ~{kv_tokens / window_tokens:,.0f} stage-2 windows in flight, which is "
        "why its TP 1 figure is 3.3x below Qwen3-14B's for 2.3x the parameters. TP 2 spreads the weights over "
        "two GPUs (~39 GB of KV cache each); FP8 weights (~33 GB) leave as much on one GPU (the same lab measured "
        "+50.6% throughput from FP8). max_model_len stays at arhn's default: the longest prompt measured is "
        "far below it, and a 20-passage window of 100-word passages stays under ~4.5k tokens."
    )


if __name__ == "__main__":
    main()
