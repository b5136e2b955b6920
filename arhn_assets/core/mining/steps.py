"""The steps of `mine_negatives`: candidate sets, encoding, mining the corpus (search, filters,
sampling, reserve) and each query's candidate rows, with the values passed between them."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
import torch

from arhn_assets.core.embedding_store import EmbeddingView
from arhn_assets.core.embeddings import Encoder
from arhn_assets.core.mining.config import FILTERS, MiningConfig
from arhn_assets.core.mining.search import DedupedCorpus, SearchHits, Tracked, score_filters, search
from arhn_assets.core.search import ArrayView


@dataclass(frozen=True)
class CandidateSets:
    """Per query row: what is scored, what is never a negative, and whether it is searched."""

    queries: list[dict]  # triplet rows: dataset, query_id, query_text, positive_ids, provided_negative_ids
    own_positive_ids: list[list[str]]  # de-duplicated, in order: the 'positive' rows
    positives: list[list[int]]  # texts never taken as negatives: own and identical queries'
    provided: list[dict[str, int]]  # provided negatives kept, doc id -> text ({} under 'ignore')
    provided_is_positive: int  # provided negatives dropped for being a positive
    tracked: list[list[int]]  # texts scored and ranked: own positives, then provided negatives
    searched: list[int]  # rows mined from the corpus
    max_positives: int


class Encoded(NamedTuple):
    # One row per de-duplicated text (zeros where not needed), read from the embedding cache's
    # shards on demand: `corpus[indices]` gives rows, the search reads it in chunks.
    corpus: EmbeddingView | ArrayView
    queries: np.ndarray
    stats: dict[str, dict]


class Survivors(NamedTuple):
    scores: torch.Tensor  # the search scores, every removed candidate at -inf
    window_scores: torch.Tensor  # sentence-transformers' window past range_min, best first
    window_columns: torch.Tensor  # their columns in `scores` (column = rank - 1)
    skipped: torch.Tensor  # the columns range_min skipped
    removed: dict[str, int]


class Pick(NamedTuple):
    text: int  # index into DedupedCorpus.texts
    rank: int
    score: float


class Mined(NamedTuple):
    picks: dict[int, list[Pick]]  # query row -> mined negatives
    reserve: dict[int, list[Pick]]
    tracked: dict[int, Tracked]  # the searched rows', read from the search
    considered: int
    removed: dict[str, int]
    seconds: float


class QueryCandidates(NamedTuple):
    rows: list[tuple]  # CANDIDATES_SCHEMA rows
    negative_scores: list[float]
    provided: int
    mined: int
    reserve: int
    removed: dict[str, int]  # provided negatives dropped per filter


def candidate_sets(triplets: pl.DataFrame, corpus: DedupedCorpus, config: MiningConfig) -> CandidateSets:
    queries = triplets.select("dataset", "query_id", "query_text", "positive_ids", "provided_negative_ids").to_dicts()
    unknown = [
        (q["query_id"], d)
        for q in queries
        for d in q["positive_ids"] + q["provided_negative_ids"]
        if d not in corpus.text_of_doc
    ]
    if unknown:
        query, doc = unknown[0]
        raise KeyError(f"{len(unknown)} doc ids are not in the passage table, e.g. query {query!r} -> doc {doc!r}")
    # Queries with the same text share their positives for exclusion and margin, as in
    # sentence-transformers: a positive of an identical query is a false negative by construction.
    pairs_by_text: dict[str, list[int]] = {}
    for q in queries:
        pairs_by_text.setdefault(q["query_text"], []).extend(corpus.text_of_doc[d] for d in q["positive_ids"])
    positives = [list(dict.fromkeys(pairs_by_text[q["query_text"]])) for q in queries]
    provided, provided_is_positive = [], 0
    for q, pos in zip(queries, positives, strict=True):
        given = {} if config.provided_negatives == "ignore" else dict.fromkeys(q["provided_negative_ids"])
        provided.append({d: corpus.text_of_doc[d] for d in given if corpus.text_of_doc[d] not in pos})
        provided_is_positive += len(given) - len(provided[-1])
    own_ids = [list(dict.fromkeys(q["positive_ids"])) for q in queries]
    tracked = [
        [corpus.text_of_doc[d] for d in own] + list(given.values())
        for own, given in zip(own_ids, provided, strict=True)
    ]
    searched = [
        i
        for i, given in enumerate(provided)
        if config.mine_from_corpus == "always" or (config.mine_from_corpus == "auto" and not given)
    ]
    return CandidateSets(
        queries=queries,
        own_positive_ids=own_ids,
        positives=positives,
        provided=provided,
        provided_is_positive=provided_is_positive,
        tracked=tracked,
        searched=searched,
        # Counted in (query, positive) pairs per query text, as sentence-transformers sizes its pool.
        max_positives=max((len(pairs_by_text[queries[i]["query_text"]]) for i in searched), default=0),
    )


def encode(sets: CandidateSets, corpus: DedupedCorpus, encoder: Encoder) -> Encoded:
    # Encode only what is scored: the whole corpus when any query is searched. The corpus stays in
    # the cache's shards: a lazy view that the search reads chunk by chunk.
    if sets.searched:
        needed = np.arange(len(corpus.texts))
    else:
        scored = {j for pos in sets.positives for j in pos} | {j for given in sets.provided for j in given.values()}
        needed = np.array(sorted(scored), dtype=np.int64)
    corpus_emb = ArrayView(np.zeros((len(corpus.texts), 0), dtype=np.float32))
    if len(needed) == len(corpus.texts) and len(needed):
        corpus_emb = encoder.embeddings(corpus.texts, "document")
    elif len(needed):
        corpus_emb = encoder.embeddings([corpus.texts[j] for j in needed], "document").expand(needed, len(corpus.texts))
    query_emb = np.zeros((0, corpus_emb.shape[1]), np.float32)
    if sets.queries:
        query_emb = encoder.encode([q["query_text"] for q in sets.queries], "query")
    stats = {role: asdict(s) | {"texts_per_second": s.texts_per_second} for role, s in encoder.stats.items()}
    return Encoded(corpus_emb, query_emb, stats)


def mine_corpus(
    sets: CandidateSets, encoded: Encoded, min_pos: np.ndarray, range_max: int, config: MiningConfig, search=search
) -> Mined:
    """Search the corpus for the searched rows, filter the hits, pick negatives and reserve.
    `search` is any function with the contract of `search.search`."""
    started = time.perf_counter()
    if not sets.searched:
        nothing_removed = {"positive": 0, **dict.fromkeys(FILTERS, 0), "range_min": 0}
        return Mined({}, {}, {}, 0, nothing_removed, time.perf_counter() - started)
    window = range_max + sets.max_positives  # the columns sentence-transformers searches
    queries, tracked = encoded.queries[sets.searched], [sets.tracked[i] for i in sets.searched]
    hits = search(queries, encoded.corpus, window + config.reserve_depth, config, tracked)
    floors = torch.from_numpy(min_pos[sets.searched])[:, None]
    survivors = _filter_hits(hits, [sets.positives[i] for i in sets.searched], floors, range_max, window, config)
    picks, reserve = _sample(hits.indices, survivors, config)
    return Mined(
        picks=dict(zip(sets.searched, picks, strict=True)),
        reserve=dict(zip(sets.searched, reserve, strict=True)),
        tracked=dict(zip(sets.searched, hits.tracked, strict=True)),
        considered=int(torch.isfinite(hits.scores).sum()),
        removed=survivors.removed,
        seconds=time.perf_counter() - started,
    )


def _filter_hits(
    hits: SearchHits, positives: list[list[int]], floors: torch.Tensor, range_max: int, window: int, config
) -> Survivors:
    """Remove positives, then each score filter in turn, then skip range_min; counts per step."""
    scores = hits.scores.clone()
    is_positive = torch.stack(
        [torch.isin(hit, torch.tensor(pos)) for hit, pos in zip(hits.indices, positives, strict=True)]
    )
    removed = {"positive": int((is_positive & torch.isfinite(scores)).sum())} | dict.fromkeys(FILTERS, 0)
    scores[is_positive] = -math.inf
    for name, mask in score_filters(scores, floors, config).items():
        mask &= torch.isfinite(scores)  # a candidate counts for the first filter that removes it
        removed[name] = int(mask.sum())
        scores[mask] = -math.inf
    window_scores, columns = torch.topk(scores[:, :window], k=range_max, dim=1)
    removed["range_min"] = int(torch.isfinite(window_scores[:, : config.range_min]).sum())
    return Survivors(
        scores=scores,
        window_scores=window_scores[:, config.range_min :],
        window_columns=columns[:, config.range_min :],
        skipped=columns[:, : config.range_min],
        removed=removed,
    )


def _sample(indices: torch.Tensor, survivors: Survivors, config: MiningConfig) -> tuple[list, list]:
    """Per searched query, its negatives (top or seeded random) and its reserve past them."""
    rng = np.random.default_rng(config.seed)
    # A separate stream for the reserve, so the mined picks stay those of sentence-transformers.
    reserve_rng = np.random.default_rng(config.seed + 1)
    picks, reserves = [], []
    for n, window_scores in enumerate(survivors.window_scores):
        finite = int(torch.isfinite(window_scores).sum())
        if config.sampling_strategy == "top":
            chosen = np.arange(min(config.num_negatives, finite))
        else:
            chosen = np.sort(rng.choice(finite, size=min(config.num_negatives, finite), replace=False))
        columns = survivors.window_columns[n, chosen].tolist()
        reserve = []
        if config.reserve_negatives:
            used = set(columns) | set(survivors.skipped[n].tolist())
            reserve = _reserve_columns(survivors.scores[n].tolist(), used, reserve_rng, config)
        picks.append([Pick(int(indices[n, c]), c + 1, float(survivors.scores[n, c])) for c in columns])
        reserves.append([Pick(int(indices[n, c]), c + 1, float(survivors.scores[n, c])) for c in reserve])
    return picks, reserves


def _reserve_columns(scores: list[float], used: set[int], rng: np.random.Generator, config: MiningConfig) -> list:
    # Every surviving search result not picked or skipped, best first.
    pool = [c for c, score in enumerate(scores) if c not in used and math.isfinite(score)]
    if config.sampling_strategy == "top":
        return pool[: config.reserve_negatives]
    return sorted(rng.choice(pool, size=min(config.reserve_negatives, len(pool)), replace=False).tolist())


def query_candidates(
    i: int, sets: CandidateSets, corpus: DedupedCorpus, tracked: Tracked, floor: np.float32, mined: Mined, config
) -> QueryCandidates:
    """One query's rows: positives, provided negatives, mined ones not already provided, reserve."""
    own_ids, own = sets.own_positive_ids[i], len(sets.own_positive_ids[i])
    ranks = list(tracked.ranks) if tracked.ranks is not None else [None] * len(tracked.scores)
    keep, removed = _keep_provided(tracked.scores[own:], floor, config)
    positives = zip(own_ids, ranks[:own], tracked.scores[:own], strict=True)
    provided = zip(sets.provided[i].items(), ranks[own:], tracked.scores[own:], keep, strict=True)
    kept = [(doc_id, text, rank, float(score)) for (doc_id, text), rank, score, k in provided if k]
    taken, fresh = {text for _, text, _, _ in kept}, []
    for pick in mined.picks.get(i, []):
        if pick.text not in taken:
            taken.add(pick.text)
            fresh.append(pick)
    spare = [pick for pick in mined.reserve.get(i, []) if pick.text not in taken]
    candidates = [
        *((doc_id, "positive", rank, float(score)) for doc_id, rank, score in positives),
        *((doc_id, "provided", rank, score) for doc_id, _, rank, score in kept),
        *((corpus.first_id[p.text], "mined", p.rank, p.score) for p in fresh),
        *((corpus.first_id[p.text], "reserve", p.rank, p.score) for p in spare),
    ]
    query = sets.queries[i]
    rows = [(query["dataset"], query["query_id"], *candidate, float(floor)) for candidate in candidates]
    # Negatives are counted in distinct texts: where provided ids share a text, `mined` comes out
    # lower and the first provided scores are left out of the summary (as it always was).
    distinct = len(taken)
    negative_scores = [score for _, _, _, score in kept] + [p.score for p in fresh]
    return QueryCandidates(
        rows=rows,
        negative_scores=negative_scores[len(negative_scores) - distinct :],
        provided=len(kept),
        mined=distinct - len(kept),
        reserve=len(spare),
        removed=removed,
    )


def _keep_provided(scores: np.ndarray, floor: np.float32, config: MiningConfig) -> tuple[np.ndarray, dict[str, int]]:
    """Which provided negatives stay: all, or under 'filter' those the score filters pass."""
    removed = dict.fromkeys(FILTERS, 0)
    drop = np.zeros(len(scores), dtype=bool)
    if config.provided_negatives == "filter" and len(scores):
        for name, mask in score_filters(torch.from_numpy(scores), torch.tensor(floor), config).items():
            mask = mask.numpy() & ~drop
            removed[name] += int(mask.sum())
            drop |= mask
    return ~drop, removed
