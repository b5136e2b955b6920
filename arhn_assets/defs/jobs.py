"""The main job (every asset of the pipeline for one dataset partition) and the judge audit's."""

import dagster as dg

from arhn_assets.defs.audit import AUDIT_GROUP
from arhn_assets.defs.partitions import dataset_partitions

arhn_pipeline = dg.define_asset_job(
    "arhn_pipeline",
    # The judge audit runs on its own: it is a check of the judge, not a stage.
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(AUDIT_GROUP),
    partitions_def=dataset_partitions,
    description="Ingest, mine, judge with the LLM, relabel, train, evaluate and report one dataset.",
)

judge_audit_job = dg.define_asset_job(
    "judge_audit_job",
    # The audit and the warehouse models over it (what `make audit` runs).
    selection=dg.AssetSelection.groups(AUDIT_GROUP).downstream(),
    partitions_def=dataset_partitions,
    description="Score the configured LLM judge against known false negatives (planted from qrels, or "
    "recorded verdicts).",
)
