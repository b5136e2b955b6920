"""Stage 2, rankings: listwise answerability ranking of each query's candidates with sliding windows.

RankGPT / rank_llm conventions: windows of `window_size` passages moved from the end of the list
to its start by `step`, each window re-ordered by the judge, so the best `step` passages bubble
to the top. The window loop is rank_llm's (the last window may be smaller than `window_size`, and
no window is a repeat of the previous one), which fixes RankGPT's skipped head for list lengths
that are not `window_size + k * step`.

Candidate order is shuffled per query with a fixed seed before ranking: listwise LLM rankers
favour early positions, and the mined order would put the positive first.

`rank_on: answer_probability` ranks pointwise instead: each query's candidates by stage 1's
`answer_probability`, with no stage-2 call (ties keep the shuffled order).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from arhn_assets.core.beir_io import passage_texts
from arhn_assets.core.llm.base import GenerationRequest, LLMBackend
from arhn_assets.core.llm.cache import DEFAULT_BATCH_SIZE, CallCache, CallStats, cached_generate
from arhn_assets.core.llm.constraints import ranking
from arhn_assets.core.mining import judged
from arhn_assets.core.parsing import RankingParse, RankingStatus, failed_ranking, parse_ranking
from arhn_assets.core.progress import Log
from arhn_assets.core.prompts import load_template, ranking_prompt

RankOn = Literal["passage", "snippet", "snippet_else_passage", "answer_probability"]
# `error`: the backend failed on a window (not cached, retried by the next run); that window keeps its order.
STATUS_SEVERITY: dict[str, int] = {"ok": 0, "missing_documents": 1, "repetition": 2, "wrong_format": 3, "error": 4}


def window_bounds(n: int, window_size: int = 20, step: int = 10) -> list[tuple[int, int]]:
    """(start, end) of each window, in the order they are ranked (from the end of the list)."""
    if window_size < 1 or step < 1:
        raise ValueError(f"window_size and step must be positive, got {window_size} and {step}")
    bounds = []
    # A list shorter than the window is one window; unclamped, start + step could be 0 at once.
    window_size = min(window_size, n)
    end, start = n, n - window_size
    while end > 0 and start + step != 0:
        start = max(start, 0)
        bounds.append((start, end))
        end, start = end - step, start - step
    return bounds


def shuffled(query_id: str, doc_ids: Sequence[str], seed: int) -> list[str]:
    """A per-query shuffle that does not depend on the order queries are processed in."""
    key = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    order = list(doc_ids)
    random.Random(int.from_bytes(key[:8], "big")).shuffle(order)
    return order


@dataclass(frozen=True)
class WindowRequest:
    query_id: str
    doc_ids: list[str]  # the window's passages in the order the judge sees them


@dataclass
class RankingResult:
    query_id: str
    ranking: list[str]  # doc ids, best first
    status: RankingStatus = "ok"  # the worst status of any window
    windows: int = 0
    window_statuses: list[str] = field(default_factory=list)


Judge = Callable[[list[WindowRequest]], list[RankingParse]]


def rank_with_sliding_windows(
    candidates: dict[str, list[str]], judge: Judge, window_size: int = 20, step: int = 10
) -> dict[str, RankingResult]:
    """Rank every query's candidates, calling `judge` once per window pass with one request per
    query that still has a window at that pass, so a backend can batch across queries."""
    results = {qid: RankingResult(qid, list(docs)) for qid, docs in candidates.items()}
    plans = {qid: window_bounds(len(docs), window_size, step) for qid, docs in candidates.items()}
    for index in range(max((len(p) for p in plans.values()), default=0)):
        active = [qid for qid, plan in plans.items() if index < len(plan)]
        requests = [WindowRequest(qid, results[qid].ranking[slice(*plans[qid][index])]) for qid in active]
        parses = judge(requests)
        if len(parses) != len(requests):
            raise RuntimeError(f"the judge answered {len(parses)} of {len(requests)} window requests")
        for qid, request, parse in zip(active, requests, parses):
            result = results[qid]
            start, end = plans[qid][index]
            result.ranking[start:end] = [request.doc_ids[p] for p in parse.order]
            result.windows += 1
            result.window_statuses.append(parse.status)
            if STATUS_SEVERITY[parse.status] > STATUS_SEVERITY[result.status]:
                result.status = parse.status
    return results


TEMPLATE = "answerability_ranking"
RANKINGS_SCHEMA = {
    "dataset": pl.String,
    "query_id": pl.String,
    "ranking": pl.List(pl.String),  # doc ids, most directly answering first
    "positive_rank": pl.Int64,  # 1-based rank of the best-ranked original positive
    "status": pl.String,  # ok | wrong_format | repetition | missing_documents | error (worst window)
    "windows": pl.Int64,
    "window_statuses": pl.List(pl.String),
    "model": pl.String,
    "prompt_version": pl.Int64,
}


@dataclass(frozen=True)
class RankingConfig:
    window_size: int = 20
    step: int = 10
    max_words: int = 100
    seed: int = 42
    # What the judge reads for each candidate. Default `passage`: stage 2 stays an independent
    # signal, so stage 1's misses and ungrounded spans do not flow into it (R+F would otherwise
    # count one judgment twice). `snippet_else_passage` shows the grounded span where there is one.
    # `answer_probability`: no listwise call; candidates ranked by stage 1's answer probability.
    rank_on: RankOn = "passage"
    # Let the backend force a complete ranking where it can (a grammar on llama.cpp, a regex on vLLM).
    constrained: bool = True


def llm_judge(
    backend: LLMBackend,
    cache: CallCache,
    texts: dict[tuple[str, str], str],
    queries: dict[str, tuple[str, str]],
    config: RankingConfig,
    stats: CallStats,
    batch_size: int,
    log: Log | None = None,
) -> Judge:
    """A window judge that asks `backend` through the call cache; `texts[(query, doc)]` is what it
    reads, `queries[query]` the query's text and task instruction."""
    spec = load_template(TEMPLATE)

    def judge(requests: list[WindowRequest]) -> list[RankingParse]:
        prompts = [
            ranking_prompt(
                queries[r.query_id][0],
                [texts[(r.query_id, d)] for d in r.doc_ids],
                config.max_words,
                queries[r.query_id][1],
            )
            for r in requests
        ]
        completions = cached_generate(
            backend,
            cache,
            spec["name"],
            spec["version"],
            [
                GenerationRequest(p.messages, p.max_new_tokens, ranking(len(r.doc_ids)) if config.constrained else None)
                for p, r in zip(prompts, requests)
            ],
            batch_size,
            stats,
            log,
        )
        return [
            failed_ranking(len(r.doc_ids)) if c.error else parse_ranking(c.text, len(r.doc_ids), spec["output_pattern"])
            for c, r in zip(completions, requests)
        ]

    return judge


def rank_candidates(
    candidates: pl.DataFrame,
    triplets: pl.DataFrame,
    passages: pl.DataFrame,
    snippets: pl.DataFrame | None,
    backend: LLMBackend,
    cache: CallCache,
    config: RankingConfig = RankingConfig(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    log: Log | None = None,
) -> tuple[pl.DataFrame, CallStats]:
    """Rank each query's candidate set (positives and negatives, shuffled with a fixed seed);
    `batch_size` window requests go to the backend at a time."""
    if config.rank_on != "passage" and snippets is None:
        raise ValueError(f"rank_on={config.rank_on!r} needs the answer_snippets table")
    queries = {
        q: (text, instruction or "")
        for q, text, instruction in triplets.select("query_id", "query_text", "instruction").iter_rows()
    }
    sets: dict[str, list[str]] = {}
    dataset_of: dict[str, str] = {}
    positives: dict[str, set[str]] = {}
    for dataset, query_id, doc_id, source in (
        judged(candidates).select("dataset", "query_id", "doc_id", "source").iter_rows()
    ):
        sets.setdefault(query_id, []).append(doc_id)
        dataset_of[query_id] = dataset
        if source == "positive":
            positives.setdefault(query_id, set()).add(doc_id)
    shuffled_sets = {q: shuffled(q, docs, config.seed) for q, docs in sets.items()}
    stats = CallStats()
    if config.rank_on == "answer_probability":
        results = pointwise_rankings(shuffled_sets, snippets, type(backend).__name__)
        model, version = snippets["model"][0], snippets["prompt_version"][0]
    else:
        texts = _window_texts(sets, passages, snippets, config.rank_on)
        judge = llm_judge(backend, cache, texts, queries, config, stats, batch_size, log)
        results = rank_with_sliding_windows(shuffled_sets, judge, config.window_size, config.step)
        model, version = backend.identity, load_template(TEMPLATE)["version"]
    rows = []
    for query_id, result in results.items():
        ranks = [i for i, d in enumerate(result.ranking, start=1) if d in positives.get(query_id, set())]
        rows.append(
            (
                dataset_of[query_id],
                query_id,
                result.ranking,
                min(ranks, default=None),
                result.status,
                result.windows,
                result.window_statuses,
                model,
                version,
            )
        )
    return pl.DataFrame(rows, schema=RANKINGS_SCHEMA, orient="row"), stats


def _window_texts(
    sets: dict[str, list[str]], passages: pl.DataFrame, snippets: pl.DataFrame | None, rank_on: RankOn
) -> dict[tuple[str, str], str]:
    """What the listwise judge reads for each (query, candidate)."""
    full = passage_texts(passages)
    grounded = (
        {}
        if snippets is None
        else {
            (q, d): s
            for q, d, s, status in snippets.select("query_id", "doc_id", "snippet", "status").iter_rows()
            if status == "answer"
        }
    )
    texts = {}
    for query_id, docs in sets.items():
        for doc_id in docs:
            snippet = grounded.get((query_id, doc_id))
            if rank_on == "passage" or (rank_on == "snippet_else_passage" and snippet is None):
                texts[(query_id, doc_id)] = full[doc_id]
            else:
                texts[(query_id, doc_id)] = snippet or "NO_ANSWER"
    return texts


def pointwise_rankings(sets: dict[str, list[str]], snippets: pl.DataFrame, backend: str) -> dict[str, RankingResult]:
    """Each query's candidates by `answer_probability`, highest first (a stable sort: ties keep the
    order given). Refuses snippets without probabilities, naming the backend and model."""
    probability = {(q, d): p for q, d, p in snippets.select("query_id", "doc_id", "answer_probability").iter_rows()}
    missing = [(q, d) for q, docs in sets.items() for d in docs if probability.get((q, d)) is None]
    if missing:
        models = sorted(set(snippets.filter(pl.col("answer_probability").is_null())["model"].to_list())) or [
            "(no snippet row)"
        ]
        raise ValueError(
            f"rank_on='answer_probability' needs answer_snippets.answer_probability, but {len(missing)} "
            f"candidates have none "
            f"(e.g. query {missing[0][0]}, passage {missing[0][1]}): the {backend} backend's model {', '.join(models)} "
            "returned no log-probabilities. "
            "Use a backend that gives them (embedded llama.cpp, vLLM, a server answering `logprobs`) or "
            "rank_on='passage'."
        )
    return {q: RankingResult(q, sorted(docs, key=lambda d: -probability[(q, d)])) for q, docs in sets.items()}
