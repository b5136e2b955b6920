"""The main job: every asset of the pipeline for one dataset partition."""

import dagster as dg

from arhn_assets.defs.audit import AUDIT_GROUP
from arhn_assets.defs.partitions import dataset_partitions

arhn_pipeline = dg.define_asset_job(
    "arhn_pipeline",
    # The judge audit runs on its own (`make audit`): it is a check of the judge, not a stage.
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(AUDIT_GROUP),
    partitions_def=dataset_partitions,
    description="Ingest, mine, judge with the LLM, relabel, train, evaluate and report one dataset.",
)
