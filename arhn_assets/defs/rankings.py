"""`answerability_rankings`: stage 2 of ARHN, a listwise ranking of each query's candidates."""

from typing import Literal

import dagster as dg
import polars as pl

from arhn_assets.core.rankings import RankingConfig, rank_candidates
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage, LanguageModel
from arhn_assets.metadata import llm_call_metadata, markdown_preview


class RankingRunConfig(dg.Config):
    window_size: int = 20
    step: int = 10
    max_words: int = 100
    seed: int = 42
    rank_on: Literal["passage", "snippet", "snippet_else_passage"] = "passage"


@dg.asset(partitions_def=dataset_partitions, group_name="llm", kinds={"llm", "polars", "parquet"}, pool="gpu")
def answerability_rankings(
    config: RankingRunConfig,
    storage: ArhnStorage,
    language_model: LanguageModel,
    mined_negatives: pl.DataFrame,
    raw_triplets: pl.DataFrame,
    raw_passages: pl.DataFrame,
    answer_snippets: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Per query: its candidates ordered by how directly they answer it, and the positive's rank."""
    with language_model.session(storage.paths) as (backend, cache):
        frame, stats = rank_candidates(
            language_model.limit(mined_negatives), raw_triplets, raw_passages, answer_snippets, backend, cache,
            RankingConfig(**config.model_dump(), batch_size=language_model.batch_size),
        )
    return dg.Output(
        frame,
        metadata={
            **llm_call_metadata(stats, frame["status"], backend.identity),
            "queries": frame.height,
            "windows": int(frame["windows"].sum()),
            "mean_positive_rank": round(frame["positive_rank"].mean() or 0.0, 2),
            "preview": markdown_preview(frame),
        },
    )
