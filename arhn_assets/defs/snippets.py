"""`answer_snippets`: stage 1 of ARHN, one verbatim answer span (or NO_ANSWER) per candidate."""

from dataclasses import asdict

import dagster as dg
import polars as pl

from arhn_assets.core.snippets import SnippetConfig
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage, LanguageModel
from arhn_assets.execution import GPU_POOL, gpu_op_tags
from arhn_assets.metadata import llm_call_metadata, markdown_preview

SnippetRunConfig = run_config(SnippetConfig)
# What both LLM stages are to Dagster: partitioned by dataset, in the `gpu` pool with its op tags.
LLM_STAGE = dict(
    partitions_def=dataset_partitions,
    group_name="llm",
    kinds={"llm", "polars", "parquet"},
    pool=GPU_POOL,
    op_tags=gpu_op_tags(),
)


@dg.asset(**LLM_STAGE)
def answer_snippets(
    context: dg.AssetExecutionContext,
    config: SnippetRunConfig,
    storage: ArhnStorage,
    language_model: LanguageModel,
    mined_negatives: pl.DataFrame,
    raw_triplets: pl.DataFrame,
    raw_passages: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Per (query, candidate): the answer span copied from the passage, checked to occur in it."""
    frame, stats, model = language_model.run_stage(
        context,
        storage.paths,
        "answer_snippets",
        {"candidates": mined_negatives, "triplets": raw_triplets, "passages": raw_passages},
        asdict(config.settings(SnippetConfig)),
    )
    answered = frame.filter(pl.col("status") == "answer")
    return dg.Output(
        frame,
        metadata={
            **llm_call_metadata(stats, frame["status"], model),
            "queries": frame["query_id"].n_unique(),
            "groundedness_rate": round(
                answered.height / max(1, frame.filter(pl.col("status").is_in(["answer", "ungrounded"])).height), 4
            ),
            "mean_answer_probability": round(frame["answer_probability"].mean() or 0.0, 4),
            "preview": markdown_preview(frame.drop("completion")),
        },
    )
