"""Mining options, the candidates schema and the result types.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

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
    # Any faiss.index_factory string: "Flat" (exact), "HNSW32", "IVF256,Flat", "IVF256,PQ32"...
    faiss_index: str = "Flat"
    faiss_nprobe: int | None = field(default=None, metadata={"doc": "IVF: lists visited per query (FAISS: 1)"})
    faiss_ef_search: int | None = field(default=None, metadata={"doc": "HNSW: search breadth (FAISS: 16)"})
    faiss_rerank: int = field(
        default=0, metadata={"doc": "re-score the best max(k, this) FAISS candidates exactly from the cache; 0 = off"}
    )
    faiss_train_size: int = field(
        default=100_000, metadata={"doc": "corpus rows sampled to train an IVF/PQ index (>= 39 per IVF list)"}
    )
    provided_negatives: Literal["keep", "filter", "ignore"] = "keep"
    mine_from_corpus: Literal["auto", "always", "never"] = "auto"
    query_chunk_size: int = 4096
    # Exact search streams the corpus from the embedding cache this many passages at a time: peak
    # memory is about query_chunk_size x corpus_chunk_size x 12 bytes plus the top-k, not the
    # corpus. SciFact (5,183 passages) is one chunk.
    corpus_chunk_size: int = field(default=8192, metadata={"doc": "passages scored per step of the exact search"})
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
        for name in ("query_chunk_size", "corpus_chunk_size", "faiss_train_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.faiss_rerank < 0:
            raise ValueError(f"faiss_rerank must be non-negative, got {self.faiss_rerank}")
        if self.sampling_strategy not in ("top", "random"):
            raise ValueError(f"sampling_strategy must be 'top' or 'random', got {self.sampling_strategy!r}")
        return range_max


@dataclass
class MiningStats:
    queries: int
    queries_searched: int
    corpus_passages: int
    unique_passage_texts: int
    range_max: int
    max_positives: int
    candidates_considered: int
    removed: dict[str, int]
    negatives: dict[str, int]
    queries_short_of_negatives: int
    queries_without_negatives: int
    search_seconds: float
    encode: dict[str, dict]
    scores: dict[str, float]


@dataclass
class MiningResult:
    candidates: pl.DataFrame
    stats: MiningStats
