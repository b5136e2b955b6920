"""`arhn`: manage dataset partitions and run the pipeline from a shell.

Runs go through the Dagster instance in $DAGSTER_HOME, so they appear in the UI like runs
launched there, and partitions added here are the ones the UI shows.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import dagster as dg
import yaml

from arhn_assets.core.paths import InvalidDatasetKey, validate_dataset_key
from arhn_assets.defs.partitions import dataset_partitions

PARTITIONS = dataset_partitions.name


def _instance() -> dg.DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        sys.exit("arhn: set DAGSTER_HOME to a folder for Dagster's run history (the Makefile uses data/dagster)")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def add_datasets(instance: dg.DagsterInstance, names: list[str]) -> list[str]:
    for name in names:
        validate_dataset_key(name)
    existing = set(instance.get_dynamic_partitions(PARTITIONS))
    new = [n for n in dict.fromkeys(names) if n not in existing]
    if new:
        instance.add_dynamic_partitions(PARTITIONS, new)
    return new


def failure_message(event: dg.DagsterEvent) -> str:
    """The user's own error of a failed step: Dagster wraps it in DagsterExecutionStepExecutionError."""
    error = event.step_failure_data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def pipeline_job(definitions: dg.Definitions, selection: str | None = None) -> dg.JobDefinition:
    """The main job, or the part of it a Dagster selection string names (e.g. 'group:ingest')."""
    if not selection:
        return definitions.resolve_job_def("arhn_pipeline")
    return definitions.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=dg.AssetSelection.from_string(selection).resolve(definitions.resolve_asset_graph())
    )


def run_pipeline(instance: dg.DagsterInstance, dataset: str, run_config: dict, selection: str | None) -> bool:
    from arhn_assets.definitions import defs

    add_datasets(instance, [dataset])
    job = pipeline_job(defs(), selection)
    result = job.execute_in_process(partition_key=dataset, instance=instance, run_config=run_config, raise_on_error=False)
    for event in result.all_events:
        if event.is_step_failure:
            print(f"arhn: step {event.step_key} failed: {failure_message(event)}", file=sys.stderr)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            print(f"arhn: check {evaluation.asset_check_key.to_user_string()} failed: {evaluation.description}", file=sys.stderr)
    return result.success


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arhn", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    datasets = commands.add_parser("datasets", help="list, add or remove dataset partitions")
    datasets.add_argument("action", choices=["list", "add", "remove"])
    datasets.add_argument("names", nargs="*")
    run = commands.add_parser("run", help="materialize the pipeline for one dataset")
    run.add_argument("--dataset", required=True)
    run.add_argument("--config", type=Path, help="YAML run config (ops: {<asset>: {config: {...}}})")
    run.add_argument("--select", help="Dagster asset selection, e.g. 'raw_triplets+' (default: the whole pipeline)")
    args = parser.parse_args(argv)

    try:
        instance = _instance()
        if args.command == "datasets":
            if args.action == "list":
                print("\n".join(instance.get_dynamic_partitions(PARTITIONS)))
            elif args.action == "add":
                print(f"added: {', '.join(add_datasets(instance, args.names)) or 'nothing new'}")
            else:
                for name in args.names:
                    instance.delete_dynamic_partition(PARTITIONS, validate_dataset_key(name))
            return 0
        run_config = yaml.safe_load(args.config.read_text()) if args.config else {}
        return 0 if run_pipeline(instance, validate_dataset_key(args.dataset), run_config or {}, args.select) else 1
    except InvalidDatasetKey as exc:
        print(f"arhn: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
