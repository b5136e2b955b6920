"""Run sentence-transformers' `mine_hard_negatives` on arhn's tables and settings.

For cross-checking: the parity tests and `benchmarks/mining.py` compare arhn's negatives with
this, and a user moving between the two can see they select the same passages.
"""

from __future__ import annotations

import polars as pl

from arhn_assets.core.beir_io import passage_text
from arhn_assets.core.mining import DedupedCorpus, MiningConfig

REFERENCE_SCHEMA = {"query_text": pl.String, "doc_id": pl.String, "score": pl.Float64}


def mine_with_sentence_transformers(
    triplets: pl.DataFrame, passages: pl.DataFrame, model, config: MiningConfig, batch_size: int = 32
) -> pl.DataFrame:
    """Negatives chosen by `mine_hard_negatives`, one row per (query text, negative doc id).

    sentence-transformers keys queries by text and passages by text, so results are mapped back
    through the same text de-duplication arhn uses. `random` sampling draws from Python's global
    `random` there, so only `top` sampling is comparable draw for draw.
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    corpus = DedupedCorpus.build(passages)
    id_of_text = dict(zip(corpus.texts, corpus.first_id))
    titles = dict(zip(passages["doc_id"], passages["title"]))
    texts = dict(zip(passages["doc_id"], passages["text"]))
    pairs = [
        (query, passage_text(titles[d], texts[d]))
        for query, ids in triplets.select("query_text", "positive_ids").iter_rows()
        for d in ids
    ]
    mined = mine_hard_negatives(
        Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]}),
        model,
        corpus=corpus.texts,
        num_negatives=config.num_negatives,
        relative_margin=config.relative_margin,
        absolute_margin=config.absolute_margin,
        max_score=config.max_score,
        min_score=config.min_score,
        range_min=config.range_min,
        range_max=config.range_max,
        sampling_strategy=config.sampling_strategy,
        use_faiss=config.search == "faiss",
        output_format="labeled-list",
        output_scores=True,
        batch_size=batch_size,
        verbose=False,
    )
    rows = {}
    for query, documents, scores in zip(mined["query"], mined["positive"], mined["scores"]):
        for document, score in zip(documents[1:], scores[1:]):
            rows[(query, id_of_text[document])] = score
    return pl.DataFrame([(q, d, s) for (q, d), s in rows.items()], schema=REFERENCE_SCHEMA, orient="row")
