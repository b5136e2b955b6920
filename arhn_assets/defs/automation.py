"""How the pipeline runs itself: the landing sensor, declarative automation and a nightly schedule.

All three start stopped: turn them on in the UI (Automation tab) or with
`dagster sensor start` / `dagster schedule start` (see the README).
- `landing_sensor` adds a `dataset` partition for each new folder of `$ARHN_HOME/landing/` and
  runs `arhn_refinement` (ingest to refined triplets) for a dataset whose files are new or changed.
- `arhn_automation` evaluates the assets' automation conditions: training, evaluation and the
  report follow once the refinement of a partition is done.
- `nightly_evaluation` re-scores every trained partition and rewrites its report.
"""

import json
import time

import dagster as dg

from arhn_assets.core.landing import scan_landing
from arhn_assets.core.paths import ArhnPaths
from arhn_assets.defs.partitions import dataset_partitions

arhn_refinement = dg.define_asset_job(
    "arhn_refinement",
    selection=dg.AssetSelection.groups("ingest", "mining", "llm", "refine"),
    partitions_def=dataset_partitions,
    description="Ingest, mine, judge and relabel one dataset: what the landing sensor runs.",
)
arhn_evaluation = dg.define_asset_job(
    "arhn_evaluation",
    selection=dg.AssetSelection.assets("beir_scores", "beir_query_scores", "retrieval_report"),
    partitions_def=dataset_partitions,
    description="Score the trained models of one dataset on BEIR and rewrite its report.",
)

# The settle time of a landed file (see core.landing): one written less than this long ago waits.
SETTLE_SECONDS = 30.0


@dg.sensor(
    job=arhn_refinement,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches $ARHN_HOME/landing/<dataset>/ for new or changed mined-negative files.",
)
def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    # Paths are read at evaluation time, not import time, so the daemon and tests see the
    # environment they run with.
    paths = ArhnPaths.from_env()
    scan = scan_landing(
        paths.home / "landing", json.loads(context.cursor) if context.cursor else None, time.time(), SETTLE_SECONDS
    )
    for name in scan.invalid_folders:
        context.log.warning(f"landing/{name}/ skipped: not a valid dataset name (letters, digits, '-', '_', '.')")
    for landed, problem in scan.newly_unreadable:
        context.log.error(f"skipped unreadable file {paths.home / 'landing' / landed.key}: {problem}")
    for dataset, problems in scan.blocked.items():
        context.log.warning(f"{dataset}: waiting until these files are fixed or removed: {'; '.join(problems)}")
    if scan.settling:
        context.log.info(
            f"still being written (modified < {SETTLE_SECONDS}s ago): {', '.join(f.key for f in scan.settling)}"
        )
    existing = set(context.instance.get_dynamic_partitions(dataset_partitions.name))
    new_datasets = [d for d in scan.datasets if d not in existing]
    run_requests = [
        dg.RunRequest(
            run_key=run_key,
            partition_key=dataset,
            tags={"arhn/landed_files": ",".join(f.name for f in scan.changed[dataset])[:1000]},
        )
        for dataset, run_key in scan.run_keys.items()
    ]
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[dataset_partitions.build_add_request(new_datasets)] if new_datasets else [],
        cursor=json.dumps(scan.cursor, sort_keys=True),
    )


arhn_automation = dg.AutomationConditionSensorDefinition(
    "arhn_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Trains, scores and reports a dataset once its refined triplets are new (AutomationCondition.eager).",
)


@dg.schedule(
    job=arhn_evaluation,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every night: re-score every dataset that has trained models and rewrite its report.",
)
def nightly_evaluation(context: dg.ScheduleEvaluationContext):
    trained = context.instance.get_materialized_partitions(dg.AssetKey("trained_retriever"))
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
    datasets = [d for d in context.instance.get_dynamic_partitions(dataset_partitions.name) if d in trained]
    if not datasets:
        return dg.SkipReason("no dataset has a trained_retriever yet")
    return [dg.RunRequest(run_key=f"nightly:{tick}:{d}", partition_key=d) for d in datasets]
