"""The main job: every asset of the pipeline for one dataset partition."""

import dagster as dg

from arhn_assets.defs.partitions import dataset_partitions

arhn_pipeline = dg.define_asset_job(
    "arhn_pipeline",
    selection=dg.AssetSelection.all(),
    partitions_def=dataset_partitions,
    description="Ingest, mine, judge with the LLM, relabel, train, evaluate and report one dataset.",
)
