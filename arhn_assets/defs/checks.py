"""Asset checks: schema and emptiness of every table, referential integrity of the relabel
decisions, LLM output quality bounds, loadable models and the base model's published score.

Blocking checks stop a run before the steps that would waste GPU time on a bad input (mining,
the LLM stages, training, evaluation). The bounds are the `quality_bounds` resource, set in
run config (`resources: quality_bounds: config: ...`) or the UI's launchpad.
"""

import dagster as dg
import polars as pl

from arhn_assets.core import checks
from arhn_assets.core.contracts import TABLES, TableContract
from arhn_assets.core.embeddings import model_fingerprint
from arhn_assets.core.refine import summary
from arhn_assets.dagster_config import SettingsMixin, resource_with_settings
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.metadata import markdown_preview


class _QualityBounds(dg.ConfigurableResource, SettingsMixin):
    """Where the LLM stages' outputs stop being trustworthy (core.checks.QualityBounds): the
    defaults suit a capable judge; configs/*.yaml loosen them for the small embedded ones."""


QualityBounds = resource_with_settings(_QualityBounds, checks.QualityBounds)


def _result(
    outcome: checks.CheckOutcome, check_name: str | None = None, asset: str | None = None
) -> dg.AssetCheckResult:
    metadata = {
        key: markdown_preview(value) if isinstance(value, pl.DataFrame) else value
        for key, value in outcome.metadata.items()
        if value is not None
    }
    return dg.AssetCheckResult(
        passed=outcome.passed,
        check_name=check_name,
        asset_key=asset,
        description=outcome.description,
        metadata=metadata,
    )


def table_checks(contract: TableContract) -> dg.AssetChecksDefinition:
    """`schema` (the contract's columns and types) and, where rows are required, `not_empty`."""
    asset = contract.asset
    names = ["schema", "not_empty"] if contract.must_have_rows else ["schema"]

    @dg.multi_asset_check(
        name=f"{asset}_table_checks",
        specs=[
            dg.AssetCheckSpec(name, asset=asset, blocking=contract.blocking, partitions_def=dataset_partitions)
            for name in names
        ],
        ins={"table": dg.AssetIn(asset)},
        description=f"{asset}: the columns and types of its contract"
        + (", and at least one row" if contract.must_have_rows else ""),
    )
    def _checks(table: pl.DataFrame):
        yield _result(checks.schema(table, contract.schema), "schema", asset)
        if contract.must_have_rows:
            yield _result(checks.not_empty(table), "not_empty", asset)

    return _checks


@dg.asset_check(asset="answer_snippets", blocking=True, partitions_def=dataset_partitions)
def snippet_groundedness(answer_snippets: pl.DataFrame, quality_bounds: QualityBounds) -> dg.AssetCheckResult:
    """Share of answers that are verbatim spans of their passage, at least `min_grounded_rate`."""
    return _result(checks.groundedness(answer_snippets, quality_bounds.min_grounded_rate))


@dg.asset_check(asset="answerability_rankings", blocking=True, partitions_def=dataset_partitions)
def invalid_ranking_rate(answerability_rankings: pl.DataFrame, quality_bounds: QualityBounds) -> dg.AssetCheckResult:
    """Share of rankings that were not clean permutations, at most `max_invalid_ranking_rate`."""
    return _result(checks.invalid_rankings(answerability_rankings, quality_bounds.max_invalid_ranking_rate))


@dg.asset_check(
    asset="relabel_decisions",
    blocking=True,
    partitions_def=dataset_partitions,
    additional_ins={"raw_triplets": dg.AssetIn("raw_triplets"), "raw_passages": dg.AssetIn("raw_passages")},
)
def decision_references(
    relabel_decisions: pl.DataFrame, raw_triplets: pl.DataFrame, raw_passages: pl.DataFrame
) -> dg.AssetCheckResult:
    """Every decision refers to a query of raw_triplets and a passage of raw_passages."""
    return _result(checks.references(relabel_decisions, raw_triplets, raw_passages))


@dg.asset_check(asset="relabel_decisions", blocking=True, partitions_def=dataset_partitions)
def relabel_rate(relabel_decisions: pl.DataFrame, quality_bounds: QualityBounds) -> dg.AssetCheckResult:
    """Per configuration, relabeled and filtered shares of the judged negatives within bounds."""
    return _result(
        checks.relabel_rates(
            summary(relabel_decisions), quality_bounds.max_relabel_rate, quality_bounds.max_filter_rate
        )
    )


@dg.asset_check(asset="trained_retriever", blocking=True, partitions_def=dataset_partitions)
def models_loadable(trained_retriever: pl.DataFrame) -> dg.AssetCheckResult:
    """Every configuration's model loads with sentence-transformers and embeds a sentence."""
    return _result(checks.models_loadable(trained_retriever))


@dg.asset_check(
    asset="beir_scores",
    partitions_def=dataset_partitions,
    additional_ins={"beir_query_scores": dg.AssetIn("beir_query_scores")},
)
def base_model_anchor(
    beir_scores: pl.DataFrame, beir_query_scores: pl.DataFrame, quality_bounds: QualityBounds
) -> dg.AssetCheckResult:
    """The base model reproduces its published nDCG@10 (all-MiniLM-L6-v2 on SciFact: 0.6451)."""
    base = beir_scores.filter(pl.col("config") == "base")
    if base.is_empty():
        return _result(checks.CheckOutcome(False, "no base-model score in beir_scores"))
    query_counts = dict(
        beir_query_scores.filter(pl.col("config") == "base")
        .group_by("eval_dataset")
        .agg(pl.col("query_id").n_unique())
        .iter_rows()
    )
    fingerprint = model_fingerprint(base["model_path"][0])
    return _result(
        checks.base_anchor(beir_scores, query_counts, fingerprint, tolerance=quality_bounds.anchor_tolerance)
    )


@dg.definitions
def quality_checks() -> dg.Definitions:
    return dg.Definitions(
        asset_checks=[
            *(table_checks(contract) for contract in TABLES),
            snippet_groundedness,
            invalid_ranking_rate,
            decision_references,
            relabel_rate,
            models_loadable,
            base_model_anchor,
        ],
        resources={"quality_bounds": QualityBounds()},
    )
