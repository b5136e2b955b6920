"""`raw_triplets`, `raw_passages` and `raw_triplets_quarantine`: one ingest step per dataset."""

import time

import dagster as dg

from arhn_assets.core.ingest import IngestConfig, ingest
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage, QuerySampleResource
from arhn_assets.metadata import markdown_preview

IngestRunConfig = run_config(IngestConfig)


@dg.multi_asset(
    outs={
        key: dg.AssetOut(description=text, kinds={"polars", "parquet"}, group_name="ingest")
        for key, text in (
            ("raw_triplets", "One row per training query: its positives and any provided negatives."),
            ("raw_passages", "Every passage of the dataset: the BEIR corpus plus passages met in landed files."),
            ("raw_triplets_quarantine", "Rejected input rows with file, line, field and reason."),
        )
    },
    partitions_def=dataset_partitions,
    can_subset=False,
)
def ingest_dataset(
    context: dg.AssetExecutionContext, config: IngestRunConfig, storage: ArhnStorage, query_sample: QuerySampleResource
):
    started = time.perf_counter()
    result = ingest(context.partition_key, storage.paths, config.settings(IngestConfig), query_sample.sample)
    quarantine_by_reason = result.quarantine.group_by("reason").len().sort("len", descending=True).head(10)
    # Written before a possible failure, so the reasons of a rejected file are inspectable.
    yield dg.Output(
        result.quarantine,
        output_name="raw_triplets_quarantine",
        metadata={
            "rows": result.quarantine.height,
            "preview": markdown_preview(result.quarantine),
            "top_reasons": markdown_preview(quarantine_by_reason),
        },
    )
    failure = result.failure_summary()
    if failure:
        raise dg.Failure(description=failure, metadata={"quarantined_rows": result.quarantine.height})
    yield dg.Output(
        result.passages,
        output_name="raw_passages",
        metadata={"origins": dict(result.passages.group_by("origin").len().iter_rows())},
    )
    yield dg.Output(
        result.triplets,
        output_name="raw_triplets",
        metadata={
            "queries": result.triplets.height,
            "query_sample": query_sample.sample.describe(),
            "sources": result.sources,
            "training_split": result.training_split or "n/a (landed files)",
            "quarantined_rows": result.quarantine.height,
            "positives_per_query": round(result.triplets["positive_ids"].list.len().mean() or 0.0, 3),
            "provided_negatives": int(result.triplets["provided_negative_ids"].list.len().sum()),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "preview": markdown_preview(result.triplets.drop("source_file")),
        },
    )
