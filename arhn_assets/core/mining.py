"""Stage 1, mining: positive-aware hard negatives (NV-Retriever TopK-PercPos, LG-ANNA's margin).

Option semantics follow `sentence_transformers.util.mine_hard_negatives` (v5/v6) exactly, so
settings move between the two unchanged:
- candidates: the `range_max + max_positives` passages most similar to the query, where
  `range_max` defaults to `range_min + num_negatives (* 10 if any margin or max_score is set)
  + max_positives`, and `max_positives` is the largest number of positives of any query;
- known positives (and passages with the same text) are never negatives;
- `absolute_margin`: drop a candidate if `score + margin > min positive score`;
  `relative_margin`: drop it if `score > min_pos - |min_pos| * margin` (0.05 = above 95% of
  the lowest positive's score); `max_score` / `min_score`: drop above / below;
- the survivors are ordered by score, the first `range_min` skipped, and `num_negatives` taken
  from the top (`top`) or sampled (`random`, seeded here, global `random` in sentence-transformers).
The passage list is de-duplicated by text, as sentence-transformers does, so equal-text passages
share one embedding and the first doc id stands for them.

What this adds: stable ids, exact ranks for positives and provided negatives, provided negatives
from landed files (kept, re-scored and filtered, or ignored), counts per filter, and the
persistent embedding cache of `embeddings.Encoder`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import polars as pl
import torch

from arhn_assets.core.beir_io import passage_text
from arhn_assets.core.embeddings import Encoder

FILTERS = ("absolute_margin", "relative_margin", "max_score", "min_score")
CANDIDATES_SCHEMA = {
    "dataset": pl.String,
    "query_id": pl.String,
    "doc_id": pl.String,
    "source": pl.String,  # positive | mined | provided | reserve (mined, kept aside for backfill)
    "rank": pl.Int64,  # 1-based position in an exhaustive search of the corpus; null where none ran
    "score": pl.Float64,
    "positive_score": pl.Float64,  # the query's lowest positive score: the margin reference
}


def judged(candidates: pl.DataFrame) -> pl.DataFrame:
    """The candidates the LLM stages judge: all but the backfill reserve."""
    return candidates.filter(pl.col("source") != "reserve")


@dataclass(frozen=True)
class MiningConfig:
    num_negatives: int = 10
    relative_margin: float | None = 0.05
    absolute_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    range_min: int = 0
    range_max: int | None = None
    sampling_strategy: Literal["top", "random"] = "top"
    seed: int = 42
    search: Literal["exact", "faiss"] = "exact"
    faiss_index: str = "Flat"  # any faiss.index_factory string, e.g. "HNSW32" for approximate search
    provided_negatives: Literal["keep", "filter", "ignore"] = "keep"
    mine_from_corpus: Literal["auto", "always", "never"] = "auto"
    query_chunk_size: int = 4096
    # Negatives mined past num_negatives and kept aside (source 'reserve'): the LLM stages do not
    # judge them; refine backfills a query whose judged negatives were all removed from them.
    reserve_negatives: int = 0

    def resolve_range_max(self, max_positives: int) -> int:
        if self.range_max is not None:
            return self.range_max
        widened = any(v is not None for v in (self.absolute_margin, self.relative_margin, self.max_score))
        return self.range_min + self.num_negatives * (10 if widened else 1) + max_positives

    @property
    def reserve_depth(self) -> int:
        """Search results beyond sentence-transformers' window, scanned for the reserve."""
        widened = any(v is not None for v in (self.absolute_margin, self.relative_margin, self.max_score))
        return self.reserve_negatives * (10 if widened else 1)

    def validate(self, max_positives: int) -> int:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise ValueError(f"range_min must be non-negative, got {self.range_min}")
        range_max = self.resolve_range_max(max_positives)
        if self.range_min >= range_max:
            raise ValueError(f"range_min ({self.range_min}) must be smaller than range_max ({range_max})")
        if self.reserve_negatives < 0:
            raise ValueError(f"reserve_negatives must be non-negative, got {self.reserve_negatives}")
        if self.num_negatives > range_max - self.range_min:
            raise ValueError(
                f"cannot mine {self.num_negatives} negatives per query: only {range_max - self.range_min} "
                f"candidates remain after skipping range_min={self.range_min} of range_max={range_max}"
            )
        if self.sampling_strategy not in ("top", "random"):
            raise ValueError(f"sampling_strategy must be 'top' or 'random', got {self.sampling_strategy!r}")
        return range_max


@dataclass
class MiningStats:
    queries: int = 0
    queries_searched: int = 0
    corpus_passages: int = 0
    unique_passage_texts: int = 0
    range_max: int = 0
    max_positives: int = 0
    candidates_considered: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    negatives: dict[str, int] = field(default_factory=dict)
    queries_short_of_negatives: int = 0
    queries_without_negatives: int = 0
    search_seconds: float = 0.0
    encode: dict[str, dict] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MiningResult:
    candidates: pl.DataFrame
    stats: MiningStats


@dataclass
class DedupedCorpus:
    """Passages de-duplicated by text: `texts[j]`, with `first_id[j]` standing for text j."""

    texts: list[str]
    first_id: list[str]
    text_of_doc: dict[str, int]

    @classmethod
    def build(cls, passages: pl.DataFrame) -> DedupedCorpus:
        texts: list[str] = []
        first_id: list[str] = []
        index: dict[str, int] = {}
        text_of_doc: dict[str, int] = {}
        for doc_id, title, text in passages.select("doc_id", "title", "text").iter_rows():
            full = passage_text(title, text)
            j = index.get(full)
            if j is None:
                j = index[full] = len(texts)
                texts.append(full)
                first_id.append(doc_id)
            text_of_doc[doc_id] = j
        return cls(texts, first_id, text_of_doc)


def _search(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, config: MiningConfig, tracked: list[list[int]]):
    """Top-k (scores, text indices) per query, padded with (-inf, -1) up to k columns, and for
    the `tracked` text indices of each query (positives, provided negatives) their (scores,
    exact 1-based ranks), read from the same similarity rows so ranks agree with the search.
    FAISS does not expose whole rows, so there tracked scores are computed apart, ranks None."""
    n = corpus_emb.shape[0]
    tracked_out: list[tuple[np.ndarray, np.ndarray | None]] = []
    if config.search == "faiss":
        import faiss

        index = faiss.index_factory(corpus_emb.shape[1], config.faiss_index, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(corpus_emb)
        index.add(corpus_emb)
        scores, indices = index.search(query_emb, min(k, n))
        scores, indices = torch.from_numpy(scores), torch.from_numpy(indices)
        scores[indices < 0] = -math.inf
        tracked_out = [(corpus_emb[idx] @ q, None) for q, idx in zip(query_emb, tracked)]
    else:
        corpus = torch.from_numpy(corpus_emb)
        parts = []
        for start in range(0, len(query_emb), config.query_chunk_size):
            chunk = torch.from_numpy(query_emb[start : start + config.query_chunk_size]) @ corpus.T
            parts.append(torch.topk(chunk, k=min(k, n), dim=1))
            for row, idx in zip(chunk, tracked[start : start + config.query_chunk_size]):
                values = row[idx]
                tracked_out.append((values.numpy(), ((row[None, :] > values[:, None]).sum(1) + 1).numpy()))
        scores = torch.cat([p.values for p in parts]) if parts else torch.empty(0, min(k, n))
        indices = torch.cat([p.indices for p in parts]) if parts else torch.empty(0, min(k, n), dtype=torch.long)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((scores.shape[0], pad), -math.inf)], dim=1)
        indices = torch.cat([indices, indices.new_full((indices.shape[0], pad), -1)], dim=1)
    return scores, indices.long(), tracked_out


def _score_filters(scores: torch.Tensor, min_pos: torch.Tensor, config: MiningConfig) -> dict[str, torch.Tensor]:
    """Boolean masks of the candidates each filter removes, in sentence-transformers' order."""
    masks = {}
    if config.absolute_margin is not None:
        masks["absolute_margin"] = scores + config.absolute_margin > min_pos
    if config.relative_margin is not None:
        masks["relative_margin"] = scores > min_pos - min_pos.abs() * config.relative_margin
    if config.max_score is not None:
        masks["max_score"] = scores > config.max_score
    if config.min_score is not None:
        masks["min_score"] = scores < config.min_score
    return masks


def mine_negatives(
    triplets: pl.DataFrame, passages: pl.DataFrame, encoder: Encoder, config: MiningConfig = MiningConfig()
) -> MiningResult:
    """Score every query's positives, provided negatives and (where configured) mined negatives.

    Returns one row per (query, candidate) with `CANDIDATES_SCHEMA`, positives included
    (source 'positive'): the full scored candidate set the LLM stages judge.
    """
    stats = MiningStats(queries=triplets.height, corpus_passages=passages.height)
    stats.removed = {"positive": 0, "provided_is_positive": 0, **{f: 0 for f in FILTERS}, "range_min": 0}
    stats.negatives = {"mined": 0, "provided": 0, "reserve": 0}
    corpus = DedupedCorpus.build(passages)
    stats.unique_passage_texts = len(corpus.texts)

    rows = triplets.select("dataset", "query_id", "query_text", "positive_ids", "provided_negative_ids").to_dicts()
    unknown = [(r["query_id"], d) for r in rows for d in r["positive_ids"] + r["provided_negative_ids"] if d not in corpus.text_of_doc]
    if unknown:
        raise KeyError(f"{len(unknown)} doc ids are not in the passage table, e.g. query {unknown[0][0]!r} -> doc {unknown[0][1]!r}")
    # Queries with the same text share their positives for exclusion and margin, as in
    # sentence-transformers: a positive of an identical query is a false negative by construction.
    own_positives = [[corpus.text_of_doc[d] for d in r["positive_ids"]] for r in rows]
    by_text: dict[str, list[int]] = {}
    for r, own in zip(rows, own_positives):
        by_text.setdefault(r["query_text"], []).extend(own)
    positives = [list(dict.fromkeys(by_text[r["query_text"]])) for r in rows]
    provided: list[list[tuple[str, int]]] = []
    for r, pos in zip(rows, positives):
        kept = []
        if config.provided_negatives != "ignore":
            for doc_id in dict.fromkeys(r["provided_negative_ids"]):
                if corpus.text_of_doc[doc_id] in pos:
                    stats.removed["provided_is_positive"] += 1
                else:
                    kept.append((doc_id, corpus.text_of_doc[doc_id]))
        provided.append(kept)
    search_rows = [
        i for i, given in enumerate(provided)
        if config.mine_from_corpus == "always" or (config.mine_from_corpus == "auto" and not given)
    ]
    stats.queries_searched = len(search_rows)
    # Counted in (query, positive) pairs per query text, as sentence-transformers sizes its pool.
    stats.max_positives = max((len(by_text[rows[i]["query_text"]]) for i in search_rows), default=0)
    range_max = config.validate(stats.max_positives) if search_rows else 0
    stats.range_max = range_max

    # Encode only what is scored: the whole corpus when any query is searched.
    if search_rows:
        needed = np.arange(len(corpus.texts))
    else:
        needed = np.array(sorted({j for pos in positives for j in pos} | {j for p in provided for _, j in p}), dtype=np.int64)
    corpus_emb = np.zeros((len(corpus.texts), 0), dtype=np.float32)
    if len(needed):
        encoded = encoder.encode([corpus.texts[j] for j in needed], "document")
        corpus_emb = np.zeros((len(corpus.texts), encoded.shape[1]), dtype=np.float32)
        corpus_emb[needed] = encoded
    query_emb = encoder.encode([r["query_text"] for r in rows], "query") if rows else np.zeros((0, corpus_emb.shape[1]), np.float32)
    stats.encode = {role: asdict(s) | {"texts_per_second": s.texts_per_second} for role, s in encoder.stats.items()}

    own_ids = [list(dict.fromkeys(r["positive_ids"])) for r in rows]
    # Scores and exact ranks of each query's own positives, then its provided negatives.
    tracked = [[corpus.text_of_doc[d] for d in own] + [j for _, j in given] for own, given in zip(own_ids, provided)]
    scored: dict[int, tuple[np.ndarray, np.ndarray | None]] = {
        i: (corpus_emb[idx] @ query_emb[i], None) for i, idx in enumerate(tracked)
    }
    union_scores = [corpus_emb[pos] @ query_emb[i] for i, pos in enumerate(positives)]
    min_pos = np.array([s.min() for s in union_scores], dtype=np.float32)

    started = time.perf_counter()
    mined: dict[int, list[tuple[int, int, float]]] = {}  # query row -> [(text index, rank, score)]
    reserve: dict[int, list[tuple[int, int, float]]] = {}
    if search_rows:
        window_columns = range_max + stats.max_positives  # what sentence-transformers searches
        k = window_columns + config.reserve_depth
        scores, indices, tracked_scores = _search(query_emb[search_rows], corpus_emb, k, config, [tracked[i] for i in search_rows])
        scored.update(zip(search_rows, tracked_scores))
        stats.candidates_considered = int(torch.isfinite(scores).sum())
        positive_mask = torch.stack([torch.isin(indices[n], torch.tensor(positives[i])) for n, i in enumerate(search_rows)])
        stats.removed["positive"] = int((positive_mask & torch.isfinite(scores)).sum())
        scores[positive_mask] = -math.inf
        for name, mask in _score_filters(scores, torch.from_numpy(min_pos[search_rows])[:, None], config).items():
            mask &= torch.isfinite(scores)
            stats.removed[name] = int(mask.sum())
            scores[mask] = -math.inf
        window_scores, positions = torch.topk(scores[:, :window_columns], k=range_max, dim=1)  # column = rank - 1
        stats.removed["range_min"] = int(torch.isfinite(window_scores[:, : config.range_min]).sum())
        skipped = positions[:, : config.range_min]
        window_scores, positions = window_scores[:, config.range_min :], positions[:, config.range_min :]
        rng = np.random.default_rng(config.seed)
        # A separate stream for the reserve, so the mined picks stay those of sentence-transformers.
        reserve_rng = np.random.default_rng(config.seed + 1)
        for n, i in enumerate(search_rows):
            finite = int(torch.isfinite(window_scores[n]).sum())
            if config.sampling_strategy == "top":
                picks = np.arange(min(config.num_negatives, finite))
            else:
                picks = np.sort(rng.choice(finite, size=min(config.num_negatives, finite), replace=False))
            cols = positions[n, picks].tolist()
            mined[i] = [(int(indices[n, c]), c + 1, float(scores[n, c])) for c in cols]
            if config.reserve_negatives:
                # Every surviving search result not picked or skipped, best first.
                used = set(cols) | set(skipped[n].tolist())
                row = scores[n].tolist()
                pool = [c for c, score in enumerate(row) if c not in used and math.isfinite(score)]
                if config.sampling_strategy == "top":
                    spare = pool[: config.reserve_negatives]
                else:
                    spare = sorted(reserve_rng.choice(pool, size=min(config.reserve_negatives, len(pool)), replace=False).tolist())
                reserve[i] = [(int(indices[n, c]), c + 1, row[c]) for c in spare]
    stats.search_seconds = time.perf_counter() - started

    out: list[tuple] = []
    negative_scores: list[float] = []
    margins: list[float] = []
    for i, r in enumerate(rows):
        searched = i in mined
        pos_ids, given = own_ids[i], provided[i]
        values, ranks = scored[i]
        ranks = ranks if ranks is not None else [None] * len(values)
        pos_scores, pos_ranks = values[: len(pos_ids)], ranks[: len(pos_ids)]
        given_scores, given_ranks = values[len(pos_ids) :], ranks[len(pos_ids) :]
        if config.provided_negatives == "filter" and given:
            drop = np.zeros(len(given), dtype=bool)
            for name, mask in _score_filters(torch.from_numpy(given_scores), torch.tensor(min_pos[i]), config).items():
                mask = mask.numpy() & ~drop
                stats.removed[name] += int(mask.sum())
                drop |= mask
            given = [g for g, d in zip(given, drop) if not d]
            given_scores = given_scores[~drop]
            given_ranks = [r for r, d in zip(given_ranks, drop) if not d]
        for doc_id, rank, score in zip(pos_ids, pos_ranks, pos_scores):
            out.append((r["dataset"], r["query_id"], doc_id, "positive", rank, float(score), float(min_pos[i])))
        taken = set()
        for (doc_id, j), rank, score in zip(given, given_ranks, given_scores):
            taken.add(j)
            out.append((r["dataset"], r["query_id"], doc_id, "provided", rank, float(score), float(min_pos[i])))
        for j, rank, score in mined.get(i, []):
            if j not in taken:
                taken.add(j)
                out.append((r["dataset"], r["query_id"], corpus.first_id[j], "mined", rank, score, float(min_pos[i])))
        count = len(taken)
        stats.negatives["provided"] += len(given)
        stats.negatives["mined"] += count - len(given)
        stats.queries_short_of_negatives += int(searched and count < config.num_negatives)
        stats.queries_without_negatives += int(count == 0)
        row_negatives = [o[5] for o in out[len(out) - count :]] if count else []
        negative_scores.extend(row_negatives)
        margins.extend(float(min_pos[i]) - s for s in row_negatives)
        spare = [(j, rank, score) for j, rank, score in reserve.get(i, []) if j not in taken]
        stats.negatives["reserve"] += len(spare)
        out.extend((r["dataset"], r["query_id"], corpus.first_id[j], "reserve", rank, score, float(min_pos[i])) for j, rank, score in spare)

    candidates = pl.DataFrame(out, schema=CANDIDATES_SCHEMA, orient="row")
    own_positive_scores = [scored[i][0][: len(own_ids[i])] for i in range(len(rows))]
    stats.scores = _score_summary(np.concatenate(own_positive_scores) if rows else np.zeros(0), negative_scores, margins)
    return MiningResult(candidates=candidates, stats=stats)


def _score_summary(positive: np.ndarray, negative: list[float], margin: list[float]) -> dict[str, float]:
    summary = {}
    for name, values in (("positive", np.asarray(positive)), ("negative", np.asarray(negative)), ("margin", np.asarray(margin))):
        if len(values):
            summary |= {
                f"{name}_mean": float(values.mean()),
                f"{name}_p50": float(np.median(values)),
                f"{name}_min": float(values.min()),
                f"{name}_max": float(values.max()),
            }
    return summary
