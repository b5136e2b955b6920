"""`retrieval_report`: did cleaning the negatives pay off? A table and a chart per dataset."""

import dagster as dg
import polars as pl

from arhn_assets.core.paths import validate_dataset_key
from arhn_assets.core.report import REPORT_SCHEMA, bar_chart, comparison, image_markdown, markdown_table
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="retrieval",
    kinds={"polars", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
def retrieval_report(
    context: dg.AssetExecutionContext, storage: ArhnStorage, beir_scores: pl.DataFrame, beir_query_scores: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    """Configurations x metrics with deltas vs baseline and paired p-values; also written as
    `report.md` and `report.png` under `$ARHN_HOME/reports/<dataset>/`."""
    folder = storage.paths.home / "reports" / validate_dataset_key(context.partition_key)
    table = comparison(beir_scores, beir_query_scores).with_columns(dataset=pl.lit(context.partition_key))
    table = table.select(REPORT_SCHEMA.keys()).cast(REPORT_SCHEMA)
    markdown = markdown_table(table)
    png = bar_chart(table, folder / "report.png")
    (folder / "report.md").write_text(
        f"# Retrieval report: {context.partition_key}\n\n{markdown}\n\n![chart](report.png)\n", encoding="utf-8"
    )
    return dg.Output(
        table,
        metadata={
            "report": dg.MetadataValue.md(markdown + "\n\n" + image_markdown(png)),
            "report_path": dg.MetadataValue.path(str(folder / "report.md")),
            "chart_path": dg.MetadataValue.path(str(folder / "report.png")),
        },
    )
