"""Stage 1, mining: positive-aware hard negatives (NV-Retriever TopK-PercPos, LG-ANNA's margin).

Option semantics follow `sentence_transformers.util.mine_hard_negatives` (v5/v6) exactly, so
settings move between the two unchanged (`config` describes each option).
The passage list is de-duplicated by text, as sentence-transformers does, so equal-text passages
share one embedding and the first doc id stands for them.

What this adds: stable ids, exact ranks for positives and provided negatives, provided negatives
from landed files (kept, re-scored and filtered, or ignored), counts per filter, and the
persistent embedding cache of `embeddings.Encoder`.

The modules: `config` (options, the candidates schema, result types), `search` (the de-duplicated
corpus, the search and the score filters), `steps` (candidate sets, encoding, mining the corpus,
each query's rows); `mine_negatives` runs the steps in turn and sums up their counts.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from arhn_assets.core.embeddings import Encoder
from arhn_assets.core.mining.config import (
    CANDIDATES_SCHEMA,
    FILTERS,
    MiningConfig,
    MiningResult,
    MiningStats,
    judged,
)
from arhn_assets.core.mining.search import DedupedCorpus, Tracked
from arhn_assets.core.mining.steps import candidate_sets, encode, mine_corpus, query_candidates

__all__ = [
    "CANDIDATES_SCHEMA",
    "FILTERS",
    "DedupedCorpus",
    "MiningConfig",
    "MiningResult",
    "MiningStats",
    "judged",
    "mine_negatives",
]


def mine_negatives(
    triplets: pl.DataFrame,
    passages: pl.DataFrame,
    encoder: Encoder,
    config: MiningConfig = MiningConfig(),  # noqa: B008 (frozen, so safe to share; ruff cannot see that across modules)
) -> MiningResult:
    """Score every query's positives, provided negatives and (where configured) mined negatives.

    Returns one row per (query, candidate) with `CANDIDATES_SCHEMA`, positives included
    (source 'positive'): the full scored candidate set the LLM stages judge.
    """
    corpus = DedupedCorpus.build(passages)
    sets = candidate_sets(triplets, corpus, config)
    range_max = config.validate(sets.max_positives) if sets.searched else 0
    encoded = encode(sets, corpus, encoder)
    # The margin reference: the lowest score of any positive, identical queries' included.
    positive_scores = [encoded.corpus[p] @ q for p, q in zip(sets.positives, encoded.queries, strict=True)]
    min_pos = np.array([scores.min() for scores in positive_scores], dtype=np.float32)
    mined = mine_corpus(sets, encoded, min_pos, range_max, config)
    tracked = [
        mined.tracked[i] if i in mined.tracked else Tracked(encoded.corpus[texts] @ encoded.queries[i], None)
        for i, texts in enumerate(sets.tracked)
    ]
    per_query = [query_candidates(i, sets, corpus, tracked[i], min_pos[i], mined, config) for i in range(len(tracked))]
    negative_scores = [s for q in per_query for s in q.negative_scores]
    margins = [float(floor) - s for floor, q in zip(min_pos, per_query, strict=True) for s in q.negative_scores]
    own_scores = [t.scores[: len(own)] for t, own in zip(tracked, sets.own_positive_ids, strict=True)]
    negatives = [q.provided + q.mined for q in per_query]
    stats = MiningStats(
        queries=len(sets.queries),
        queries_searched=len(sets.searched),
        corpus_passages=passages.height,
        unique_passage_texts=len(corpus.texts),
        range_max=range_max,
        max_positives=sets.max_positives,
        candidates_considered=mined.considered,
        removed={
            "positive": mined.removed["positive"],
            "provided_is_positive": sets.provided_is_positive,
            **{f: mined.removed[f] + sum(q.removed[f] for q in per_query) for f in FILTERS},
            "range_min": mined.removed["range_min"],
        },
        negatives={source: sum(getattr(q, source) for q in per_query) for source in ("mined", "provided", "reserve")},
        queries_short_of_negatives=sum(n < config.num_negatives for i, n in enumerate(negatives) if i in mined.picks),
        queries_without_negatives=negatives.count(0),
        search_seconds=mined.seconds,
        encode=encoded.stats,
        scores=_score_summary(np.concatenate(own_scores) if own_scores else np.zeros(0), negative_scores, margins),
    )
    candidates = pl.DataFrame([row for q in per_query for row in q.rows], schema=CANDIDATES_SCHEMA, orient="row")
    return MiningResult(candidates=candidates, stats=stats)


def _score_summary(positive: np.ndarray, negative: list[float], margin: list[float]) -> dict[str, float]:
    summary = {}
    for name, values in (
        ("positive", np.asarray(positive)),
        ("negative", np.asarray(negative)),
        ("margin", np.asarray(margin)),
    ):
        if len(values):
            summary |= {
                f"{name}_mean": float(values.mean()),
                f"{name}_p50": float(np.median(values)),
                f"{name}_min": float(values.min()),
                f"{name}_max": float(values.max()),
            }
    return summary
