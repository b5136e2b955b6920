"""Nearest-neighbour search over a corpus read chunk by chunk: exact top-k, and FAISS indexes.

A corpus is anything with `shape`, `chunks(size)` yielding (offset, float32 block) in corpus
order, and `corpus[indices]` giving some rows as an array: `embeddings.EmbeddingView` (read from
the embedding cache's memory-mapped shards) or `ArrayView` (an array already in memory). Mining
and evaluation search through here, so neither holds the corpus matrix: exact search keeps the
running top-k of every query and one (query block x corpus chunk) score matrix, whatever the
corpus size.

Two rules make the result independent of the chunk sizes:
- a score is the float64 dot product of the float32 vectors, rounded to float32. A float32 BLAS
  product depends on the matrix shapes (a one-row chunk runs another kernel than a block, and
  ~90% of its scores then differ by an ulp); float64 sums differ by ~1e-16, which rounding to
  float32 almost never shows. The re-rank and the scores of tracked passages are computed so too;
- equal scores are ordered by corpus index, lower first (torch.topk leaves that order open).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

# Rows of corpus embeddings gathered at once by a re-rank or for tracked passages.
GATHER_ROWS = 16384


class ArrayView:
    """An embedding matrix in memory, seen as a chunked corpus."""

    def __init__(self, array: np.ndarray):
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.shape = self.array.shape

    def __getitem__(self, indices) -> np.ndarray:
        return self.array[np.asarray(indices, dtype=np.int64)]

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for offset in range(0, self.shape[0], size):
            yield offset, self.array[offset : offset + size]


def as_view(corpus):
    """`corpus` as a chunked corpus: arrays are wrapped, views are returned as they are."""
    return ArrayView(corpus) if isinstance(corpus, np.ndarray) else corpus


class ExactHits(NamedTuple):
    scores: torch.Tensor  # (queries, k) float32, best first, padded with -inf
    indices: torch.Tensor  # (queries, k) int64 corpus rows, padded with -1
    tracked_scores: list[np.ndarray]  # per query, of its tracked rows
    tracked_ranks: list[np.ndarray]  # 1 + the number of corpus scores above each


def score_block(queries: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """float32 scores of float64 `queries` against float64 `block` rows (see the module doc)."""
    return (queries @ block.T).to(torch.float32)


def exact_search(
    queries: np.ndarray,
    corpus,
    k: int,
    chunk_size: int,
    query_chunk_size: int,
    tracked: list[list[int]] | None = None,
) -> ExactHits:
    """Top-k corpus rows per query in one pass over the corpus, `chunk_size` rows at a time, and
    for each query's `tracked` rows their scores and exact ranks (counted in the same pass)."""
    corpus = as_view(corpus)
    count = len(queries)
    top_scores = torch.full((count, k), -math.inf)
    top_rows = torch.full((count, k), -1, dtype=torch.int64)
    tracked = tracked if tracked is not None else [[] for _ in range(count)]
    tracked_rows, thresholds = tracked_scores(queries, corpus, tracked)
    above = torch.zeros(thresholds.shape, dtype=torch.int64)
    query_tensor = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    for offset, block in corpus.chunks(chunk_size):
        block = torch.from_numpy(np.ascontiguousarray(block)).to(torch.float64)
        for start in range(0, count, query_chunk_size):
            end = min(start + query_chunk_size, count)
            scores = score_block(query_tensor[start:end].to(torch.float64), block)
            top_scores[start:end], top_rows[start:end] = _merge(
                top_scores[start:end], top_rows[start:end], scores, offset
            )
            for column in range(thresholds.shape[1]):
                above[start:end, column] += (scores > thresholds[start:end, column : column + 1]).sum(1)
    sizes = [len(rows) for rows in tracked]
    return ExactHits(
        scores=top_scores,
        indices=top_rows,
        tracked_scores=[thresholds[i, :n].numpy() for i, n in enumerate(sizes)],
        tracked_ranks=[(above[i, :n] + 1).numpy() for i, n in enumerate(sizes)],
    )


def tracked_scores(queries: np.ndarray, corpus, tracked: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's tracked corpus rows (padded with -1) and their scores (padded with NaN, which
    no score is above), computed from the gathered rows."""
    width = max((len(rows) for rows in tracked), default=0)
    rows = torch.full((len(tracked), width), -1, dtype=torch.int64)
    for i, wanted in enumerate(tracked):
        rows[i, : len(wanted)] = torch.as_tensor(wanted, dtype=torch.int64)
    scores = torch.full(rows.shape, math.nan)
    step = max(1, GATHER_ROWS // max(width, 1))
    for start in range(0, len(tracked) if width else 0, step):
        part = rows[start : start + step]
        wanted = torch.unique(part[part >= 0])
        vectors = torch.from_numpy(as_view(corpus)[wanted.numpy()]).to(torch.float64)
        block = score_block(torch.from_numpy(queries[start : start + step]).to(torch.float64), vectors)
        columns = torch.searchsorted(wanted, part.clamp(min=0))
        found = block.gather(1, columns.clamp(max=max(len(wanted) - 1, 0)))
        scores[start : start + step] = torch.where(part >= 0, found, torch.tensor(math.nan))
    return rows, scores


def _merge(
    top_scores: torch.Tensor, top_rows: torch.Tensor, scores: torch.Tensor, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The running top-k merged with a chunk's scores. Every running row comes before the chunk's,
    so a stable sort of the two (each ordered by score, then row) keeps ties in row order."""
    k = top_scores.shape[1]
    values, columns = _chunk_top(scores, min(k, scores.shape[1]))
    merged_scores = torch.cat([top_scores, values], dim=1)
    merged_rows = torch.cat([top_rows, columns + offset], dim=1)
    order = torch.sort(merged_scores, dim=1, descending=True, stable=True).indices[:, :k]
    return merged_scores.gather(1, order), merged_rows.gather(1, order)


def _chunk_top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns of each row, ties at the k-th score broken towards lower columns,
    ordered by score then column."""
    extra = int(k < scores.shape[1])
    values, columns = torch.topk(scores, k + extra, dim=1)
    if extra:
        # Where the (k+1)-th score equals the k-th, topk may have kept any of the tied columns.
        tied = torch.nonzero(values[:, k] == values[:, k - 1]).flatten().tolist()
        values, columns = values[:, :k].clone(), columns[:, :k].clone()
        for row in tied:
            line, floor = scores[row], values[row, k - 1]
            above = torch.nonzero(line > floor).flatten()
            columns[row] = torch.cat([above, torch.nonzero(line == floor).flatten()[: k - len(above)]])
            values[row] = line[columns[row]]
    by_column = torch.sort(columns, dim=1).indices
    values, columns = values.gather(1, by_column), columns.gather(1, by_column)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), columns.gather(1, order)


def order_candidates(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of each query's candidates (rows -1 are padding), by score then row."""
    scores = torch.where(rows >= 0, scores, torch.tensor(-math.inf))
    padded = torch.where(rows >= 0, rows, torch.iinfo(torch.int64).max)
    by_row = torch.sort(padded, dim=1).indices
    scores, rows = scores.gather(1, by_row), rows.gather(1, by_row)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), rows.gather(1, order)


def rerank(queries: np.ndarray, corpus, candidates: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates (queries x depth corpus rows, -1 = none) re-scored exactly from the corpus, the
    k best kept: where the exact top-k is among the candidates, the result is exact search's."""
    corpus, candidates = as_view(corpus), torch.from_numpy(np.asarray(candidates, dtype=np.int64))
    step = max(1, GATHER_ROWS // max(candidates.shape[1], 1))
    out_scores, out_rows = [], []
    for start in range(0, len(queries), step):
        part = candidates[start : start + step]
        wanted = torch.unique(part[part >= 0])
        vectors = torch.from_numpy(corpus[wanted.numpy()]).to(torch.float64)
        block = score_block(torch.from_numpy(queries[start : start + step]).to(torch.float64), vectors)
        columns = torch.searchsorted(wanted, part.clamp(min=0)).clamp(max=max(len(wanted) - 1, 0))
        scores, rows = order_candidates(block.gather(1, columns) if len(wanted) else part.float(), part, k)
        out_scores.append(scores)
        out_rows.append(rows)
    if not out_scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
    return torch.cat(out_scores), torch.cat(out_rows)


def faiss_search(
    queries: np.ndarray,
    corpus,
    k: int,
    factory: str,
    *,
    chunk_size: int,
    train_size: int,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank_depth: int = 0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, rows) from a FAISS inner-product index (`factory`: any index_factory string:
    Flat, HNSW32, IVF256,Flat, IVF256,PQ32...). An index that needs training is trained on up to
    `train_size` corpus rows drawn at random (seeded); the corpus is added chunk by chunk.
    `nprobe` (IVF) and `ef_search` (HNSW) trade speed for recall; with `rerank_depth` the best
    `max(k, rerank_depth)` candidates are re-scored exactly and the k best kept. Rows -1 and
    scores -inf pad queries with fewer than k results."""
    import faiss

    corpus = as_view(corpus)
    n, dim = corpus.shape
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(training_sample(corpus, train_size, seed))
    for _, block in corpus.chunks(chunk_size):
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is not None:
            try:
                faiss.ParameterSpace().set_index_parameter(index, name, value)
            except RuntimeError as error:
                raise ValueError(f"FAISS index {factory!r} has no parameter {name}") from error
    depth = min(max(k, rerank_depth), n)
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), depth) if depth else (None, None)
    if not depth:
        return torch.full((len(queries), k), -math.inf), torch.full((len(queries), k), -1, dtype=torch.int64)
    if rerank_depth:
        return rerank(queries, corpus, rows, k)
    return order_candidates(torch.from_numpy(scores), torch.from_numpy(rows).long(), k)


def training_sample(corpus, size: int, seed: int) -> np.ndarray:
    """Up to `size` corpus rows drawn without replacement (all of them for a smaller corpus)."""
    n = corpus.shape[0]
    if n <= size:
        return np.concatenate([block for _, block in corpus.chunks(max(n, 1))]) if n else np.zeros(corpus.shape)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(corpus[rows], dtype=np.float32)
