"""The de-duplicated corpus, the nearest-neighbour search over it (`core/search.py`, streamed over
the corpus in chunks) and the score filters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
import torch

from arhn_assets.core.beir_io import passage_text
from arhn_assets.core.mining.config import MiningConfig
from arhn_assets.core.search import as_view, exact_search, faiss_search, tracked_scores


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


class Tracked(NamedTuple):
    scores: np.ndarray  # of a query's `CandidateSets.tracked` texts
    ranks: np.ndarray | None  # exact, 1-based; None where no exact search ran


class SearchHits(NamedTuple):
    scores: torch.Tensor  # (searched queries, k), best first, padded with -inf
    indices: torch.Tensor  # text indices, padded with -1
    tracked: list[Tracked]


def search(query_emb: np.ndarray, corpus_emb, k: int, config: MiningConfig, tracked: list[list[int]]) -> SearchHits:
    """Top-k (scores, text indices) per query, padded with (-inf, -1) up to k columns, and for
    the `tracked` text indices of each query (positives, provided negatives) their (scores,
    exact 1-based ranks), the ranks counted in the same pass over the corpus as the search.
    `corpus_emb` is a chunked corpus (`core/search.py`: the embedding cache's lazy view) or an
    array. Exact search reads it `corpus_chunk_size` rows at a time; a FAISS index is built from
    it the same way, and there tracked scores are computed apart, ranks None."""
    corpus = as_view(corpus_emb)
    n = corpus.shape[0]
    if config.search == "faiss":
        scores, indices = faiss_search(
            query_emb,
            corpus,
            min(k, n),
            config.faiss_index,
            chunk_size=config.corpus_chunk_size,
            train_size=config.faiss_train_size,
            nprobe=config.faiss_nprobe,
            ef_search=config.faiss_ef_search,
            rerank_depth=config.faiss_rerank,
            seed=config.seed,
        )
        _, tracked_values = tracked_scores(query_emb, corpus, tracked)
        tracked_out = [Tracked(row[: len(t)].numpy(), None) for row, t in zip(tracked_values, tracked, strict=True)]
    else:
        hits = exact_search(query_emb, corpus, k, config.corpus_chunk_size, config.query_chunk_size, tracked)
        scores, indices = hits.scores, hits.indices
        tracked_out = [Tracked(s, r) for s, r in zip(hits.tracked_scores, hits.tracked_ranks, strict=True)]
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((scores.shape[0], pad), -math.inf)], dim=1)
        indices = torch.cat([indices, indices.new_full((indices.shape[0], pad), -1)], dim=1)
    return SearchHits(scores, indices.long(), tracked_out)


def score_filters(scores: torch.Tensor, min_pos: torch.Tensor, config: MiningConfig) -> dict[str, torch.Tensor]:
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
