"""Parity with sentence-transformers on real data: a SciFact slice (the first 120 training queries,
their positives and 480 other passages), the real all-MiniLM-L6-v2, default arhn settings."""

from __future__ import annotations

import polars as pl
import pytest

from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.ingest import IngestConfig, ingest
from arhn_assets.core.mining import MiningConfig, mine_negatives
from arhn_assets.core.mining_reference import mine_with_sentence_transformers
from arhn_assets.core.sampling import QuerySample

pytestmark = pytest.mark.all_cores


@pytest.mark.slow
def test_scifact_slice_gives_the_same_negatives_as_mine_hard_negatives(arhn_paths, embedding_cache):
    data = ingest("scifact", arhn_paths, IngestConfig(download=False), QuerySample(120))
    positives = data.triplets["positive_ids"].explode().unique()
    passages = pl.concat(
        [
            data.passages.filter(pl.col("doc_id").is_in(positives)),
            data.passages.filter(~pl.col("doc_id").is_in(positives)).head(480),
        ]
    )
    config = MiningConfig()  # 10 negatives, relative margin 0.05, top
    encoder = Encoder(EncoderSpec(), embedding_cache)
    ours = mine_negatives(data.triplets, passages, encoder, config).candidates
    reference = mine_with_sentence_transformers(data.triplets, passages, encoder.model, config)

    mined = ours.filter(pl.col("source") == "mined").join(data.triplets.select("query_id", "query_text"), on="query_id")
    ours_pairs = set(mined.select("query_text", "doc_id").iter_rows())
    reference_pairs = set(reference.select("query_text", "doc_id").iter_rows())
    assert len(reference_pairs) > 1000
    assert ours_pairs == reference_pairs
