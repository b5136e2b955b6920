"""`relabel_decisions` and `refined_triplets`: what each configuration does to each candidate."""

import dagster as dg
import polars as pl

from arhn_assets.core import refine
from arhn_assets.core.exports import export_training_files
from arhn_assets.core.paths import validate_dataset_key
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage
from arhn_assets.metadata import markdown_preview

RefineRunConfig = run_config(refine.RefineConfig)


@dg.asset(partitions_def=dataset_partitions, group_name="refine", kinds={"polars", "parquet"})
def relabel_decisions(
    config: RefineRunConfig,
    answerability_rankings: pl.DataFrame,
    answer_snippets: pl.DataFrame,
    mined_negatives: pl.DataFrame,
    raw_triplets: pl.DataFrame,
    raw_passages: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """One row per (configuration, query, candidate): the decision and the evidence behind it."""
    settings = config.settings(refine.RefineConfig)
    judged = mined_negatives.filter(pl.col("query_id").is_in(answerability_rankings["query_id"].implode()))
    frame = refine.decide(judged, answer_snippets, answerability_rankings, settings)
    examples = refine.decision_examples(frame, raw_triplets, raw_passages, answer_snippets)
    return dg.Output(
        frame,
        metadata={
            "summary": markdown_preview(refine.summary(frame).drop("dataset"), rows=20),
            "changed_labels": markdown_preview(examples, max_text=160),
            "preview": markdown_preview(frame),
        },
    )


@dg.asset(partitions_def=dataset_partitions, group_name="refine", kinds={"polars", "parquet"})
def refined_triplets(
    context: dg.AssetExecutionContext,
    storage: ArhnStorage,
    relabel_decisions: pl.DataFrame,
    raw_triplets: pl.DataFrame,
    raw_passages: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Per configuration and kept query: positives (original + relabeled) and kept negatives,
    also exported as FlagEmbedding JSONL, Tevatron JSONL and sentence-transformers Parquet."""
    frame = refine.refined_triplets(relabel_decisions)
    folder = storage.paths.home / "exports" / validate_dataset_key(context.partition_key)
    files = export_training_files(frame, raw_triplets, raw_passages, folder)
    counts = frame.group_by("config").agg(queries=pl.len(), negatives=pl.col("negative_ids").list.len().sum())
    return dg.Output(
        frame,
        metadata={
            "exports": dg.MetadataValue.path(str(folder)),
            "files": len(files),
            "per_config": markdown_preview(counts),
        },
    )


@dg.asset(partitions_def=dataset_partitions, group_name="refine", kinds={"polars", "parquet"})
def refine_summary(relabel_decisions: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Per configuration: queries kept and dropped, negatives relabeled, filtered and kept, what
    trains, and the rates (core/refine.py summary(); the warehouse's relabel_summary reads it)."""
    frame = refine.summary(relabel_decisions)
    return dg.Output(frame, metadata={"preview": markdown_preview(frame.drop("dataset"), rows=20)})
