"""The de-duplicated corpus, the nearest-neighbour search over it and the score filters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
import torch

from arhn_assets.core.beir_io import passage_text
from arhn_assets.core.mining.config import MiningConfig


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


def search(
    query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, config: MiningConfig, tracked: list[list[int]]
) -> SearchHits:
    """Top-k (scores, text indices) per query, padded with (-inf, -1) up to k columns, and for
    the `tracked` text indices of each query (positives, provided negatives) their (scores,
    exact 1-based ranks), read from the same similarity rows so ranks agree with the search.
    FAISS does not expose whole rows, so there tracked scores are computed apart, ranks None."""
    n = corpus_emb.shape[0]
    tracked_out: list[Tracked] = []
    if config.search == "faiss":
        import faiss

        index = faiss.index_factory(corpus_emb.shape[1], config.faiss_index, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(corpus_emb)
        index.add(corpus_emb)
        scores, indices = index.search(query_emb, min(k, n))
        scores, indices = torch.from_numpy(scores), torch.from_numpy(indices)
        scores[indices < 0] = -math.inf
        tracked_out = [Tracked(corpus_emb[idx] @ q, None) for q, idx in zip(query_emb, tracked, strict=True)]
    else:
        corpus = torch.from_numpy(corpus_emb)
        parts = []
        for start in range(0, len(query_emb), config.query_chunk_size):
            chunk = torch.from_numpy(query_emb[start : start + config.query_chunk_size]) @ corpus.T
            parts.append(torch.topk(chunk, k=min(k, n), dim=1))
            for row, idx in zip(chunk, tracked[start : start + config.query_chunk_size], strict=True):
                values = row[idx]
                tracked_out.append(Tracked(values.numpy(), ((row[None, :] > values[:, None]).sum(1) + 1).numpy()))
        scores = torch.cat([p.values for p in parts]) if parts else torch.empty(0, min(k, n))
        indices = torch.cat([p.indices for p in parts]) if parts else torch.empty(0, min(k, n), dtype=torch.long)
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
