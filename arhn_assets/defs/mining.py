"""`mined_negatives`: the scored candidate set (positives + hard negatives) of every query."""

import time

import dagster as dg
import polars as pl

from arhn_assets.core.mining import MiningConfig, mine_negatives
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage, EmbeddingModel
from arhn_assets.metadata import markdown_preview, rounded

# One source of truth for the options: the Dagster config is built from the dataclass, so the
# names, types and defaults are those of core.mining (and of sentence-transformers).
MiningRunConfig = run_config(MiningConfig, "Same names and meaning as sentence_transformers.util.mine_hard_negatives.")


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="mining",
    kinds={"sentence-transformers", "polars", "parquet"},
    ins={"raw_triplets": dg.AssetIn(), "raw_passages": dg.AssetIn()},
)
def mined_negatives(
    context: dg.AssetExecutionContext,
    config: MiningRunConfig,
    storage: ArhnStorage,
    embedding_model: EmbeddingModel,
    raw_triplets: pl.DataFrame,
    raw_passages: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Every query's scored candidate set: its positives (source 'positive') and its hard
    negatives, mined from the corpus ('mined') or taken from landed files ('provided')."""
    started = time.perf_counter()
    instruction = raw_triplets["instruction"].drop_nulls().first() or ""
    encoder = embedding_model.encoder(
        storage.paths.embedding_cache_dir, instruction, log=context.log.info, context=context
    )
    result = mine_negatives(raw_triplets, raw_passages, encoder, config.settings(MiningConfig))
    stats = result.stats
    encode = stats.encode.get("document", {})
    return dg.Output(
        result.candidates,
        metadata={
            "queries": stats.queries,
            "queries_searched": stats.queries_searched,
            "negatives": stats.negatives,
            "removed_by_filter": stats.removed,
            "queries_short_of_negatives": stats.queries_short_of_negatives,
            "queries_without_negatives": stats.queries_without_negatives,
            "range_max": stats.range_max,
            "scores": rounded(stats.scores),
            "model": encoder.fingerprint,
            "precision": encoder.spec.precision,
            "passages_encoded": encode.get("encoded", 0),
            "embedding_cache_hits": encode.get("cache_hits", 0),
            "encode_passages_per_second": round(encode.get("texts_per_second", 0.0), 1),
            "search_seconds": round(stats.search_seconds, 3),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "preview": markdown_preview(result.candidates),
        },
    )
