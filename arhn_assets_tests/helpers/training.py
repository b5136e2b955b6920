"""Fine-tuning on the toy data: a refined slice of it, a toy training run, and the script a test
kills in the middle of training."""

from __future__ import annotations

import textwrap
from pathlib import Path

import polars as pl

from arhn_assets.core.training import TrainingConfig, train_retriever, training_rows
from arhn_assets_tests.helpers.toy_data import make_passages, make_triplets


def refined_slice() -> pl.DataFrame:
    triplets, passages = make_triplets(), make_passages()
    doc_ids = passages["doc_id"].to_list()
    negatives = [[d for d in doc_ids if d not in positives][:3] for positives in triplets["positive_ids"]]
    negatives[0] = []  # a query left without negatives: it trains on in-batch negatives only
    return pl.DataFrame(
        {"query_id": triplets["query_id"], "positive_ids": triplets["positive_ids"], "negative_ids": negatives}
    )


TRAINING_RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from arhn_assets_tests.helpers.training import train_toy
    train_toy(Path(sys.argv[1]), int(sys.argv[2]))
""")


def train_toy(folder: Path, steps: int):
    rows, pairs = training_rows(refined_slice(), make_triplets(), make_passages(), 1)
    return train_retriever(
        rows, pairs, TrainingConfig(batch_size=4, max_steps=steps, learning_rate=1e-4), folder, {"name": "toy"}
    )
