"""`answerability_rankings`: stage 2 of ARHN, a listwise ranking of each query's candidates."""

from dataclasses import asdict

import dagster as dg
import polars as pl

from arhn_assets.core.rankings import RankingConfig
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.resources import ArhnStorage, LanguageModel
from arhn_assets.defs.snippets import LLM_STAGE
from arhn_assets.metadata import llm_call_metadata, markdown_preview

RankingRunConfig = run_config(RankingConfig)


@dg.asset(**LLM_STAGE)
def answerability_rankings(
    context: dg.AssetExecutionContext,
    config: RankingRunConfig,
    storage: ArhnStorage,
    language_model: LanguageModel,
    mined_negatives: pl.DataFrame,
    raw_triplets: pl.DataFrame,
    raw_passages: pl.DataFrame,
    answer_snippets: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Per query: its candidates ordered by how directly they answer it, and the positive's rank."""
    frame, stats, model = language_model.run_stage(
        context,
        storage.paths,
        "answerability_rankings",
        {
            "candidates": mined_negatives,
            "triplets": raw_triplets,
            "passages": raw_passages,
            "snippets": answer_snippets,
        },
        asdict(config.settings(RankingConfig)),
    )
    return dg.Output(
        frame,
        metadata={
            **llm_call_metadata(stats, frame["status"], model),
            "queries": frame.height,
            "windows": int(frame["windows"].sum()),
            "mean_positive_rank": round(frame["positive_rank"].mean() or 0.0, 2),
            "preview": markdown_preview(frame),
        },
    )
