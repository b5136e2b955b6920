"""`arhn`: manage dataset partitions and run the pipeline from a shell.

Runs go through the Dagster instance in $DAGSTER_HOME, so they appear in the UI like runs
launched there, and partitions added here are the ones the UI shows.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import dagster as dg
import yaml

from arhn_assets.core.paths import InvalidDatasetKey, validate_dataset_key
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.run_output import LOGGER_KEY, innermost_error, print_summary

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
    return innermost_error(event.step_failure_data.error).message.strip()


def pipeline_job(definitions: dg.Definitions, selection: str | None = None) -> dg.JobDefinition:
    """The main job, or the part of it a Dagster selection string names (e.g. 'group:ingest'),
    with the other outputs of any multi-asset step it selects (which must run together)."""
    if not selection:
        return definitions.resolve_job_def("arhn_pipeline")
    selected = dg.AssetSelection.from_string(selection).required_multi_asset_neighbors()
    return definitions.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=selected.resolve(definitions.resolve_asset_graph())
    )


def run_pipeline(
    instance: dg.DagsterInstance, dataset: str, run_config: dict, selection: str | None, verbose: bool = False
) -> bool:
    """Materialize the selection for one dataset. By default the console shows run_output's
    compact lines (its Dagster logger, selected in the run config's `loggers` in place of the
    DEBUG console logger); `verbose` keeps Dagster's event log as is. The summary follows either way."""
    from arhn_assets.definitions import defs
    from arhn_assets.defs.resources import ArhnStorage

    add_datasets(instance, [dataset])
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore", dg.BetaWarning)  # e.g. 'group:...' selections
        job = pipeline_job(defs(), selection)
    if not verbose:  # the job has the logger: defs/loggers.py declares it for every job
        # Libraries' own bars (transformers' "Loading weights", datasets' "Saving the dataset" for
        # the exports) would break the line-per-step output; the stages report their progress as
        # log lines instead (core/progress.py).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import datasets
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        run_config = {**run_config, "loggers": {**(run_config.get("loggers") or {}), LOGGER_KEY: {}}}
    result = job.execute_in_process(
        partition_key=dataset, instance=instance, run_config=run_config, raise_on_error=False
    )
    home = (((run_config.get("resources") or {}).get("storage") or {}).get("config") or {}).get("home")
    print_summary(instance, result.run_id, ArhnStorage(home=home if isinstance(home, str) else "").paths.home, dataset)
    for event in result.all_events:
        if event.is_step_failure:
            print(f"arhn: step {event.step_key} failed: {failure_message(event)}", file=sys.stderr)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            print(
                f"arhn: check {evaluation.asset_check_key.to_user_string()} failed: {evaluation.description}",
                file=sys.stderr,
            )
    return result.success


def serve_llm(args: argparse.Namespace) -> int:
    """Run llama.cpp's server until SIGINT or SIGTERM."""
    import signal
    import threading

    from arhn_assets.core.llm.llama_cpp import DEFAULT_MODEL, ServerSettings, start_server
    from arhn_assets.core.llm.models import ModelFileError, resolve_gguf
    from arhn_assets.core.paths import ArhnPaths

    try:
        resolved = resolve_gguf(args.model, ArhnPaths.from_env().models_cache_dir, DEFAULT_MODEL)
    except ModelFileError as error:
        print(f"arhn: {error}", file=sys.stderr)
        return 2
    alias = args.alias or args.model or DEFAULT_MODEL
    settings = ServerSettings(
        resolved.path,
        args.threads,
        args.context_size,
        args.parallel,
        args.host,
        args.port,
        os.environ.get(args.api_key_env) or None,
        alias,
    )
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    server = start_server(settings)
    print(f"arhn: serving {resolved.identity} as {alias!r} at {server.listening_address}/v1", flush=True)
    stop.wait()  # signal handlers run while the main thread waits on a lock
    del server  # stops llama.cpp's loop and frees the model
    return 0


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
    run.add_argument(
        "--verbose", "-v", action="store_true", help="print Dagster's full event log (DEBUG) instead of a line per step"
    )
    server = commands.add_parser(
        "llm-server", help="serve a GGUF model over llama.cpp's OpenAI-compatible API (the `openai` backend's server)"
    )
    server.add_argument(
        "--model",
        default="",
        help="a preset (qwen2.5-coder-1.5b, smollm2-135m) or a .gguf file (default: qwen2.5-coder-1.5b)",
    )
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080)
    server.add_argument("--alias", help="the model name clients ask for (default: the --model value)")
    server.add_argument("--api-key-env", default="OPENAI_API_KEY", help="require the key this variable holds, when set")
    server.add_argument("--threads", type=int, help="default: every core this process may run on")
    server.add_argument("--context-size", type=int, default=8192, help="tokens per slot")
    server.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="slots decoded together (more: faster decoding, answers may differ in the last bits)",
    )
    args = parser.parse_args(argv)
    if args.command == "llm-server":
        return serve_llm(args)

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
        succeeded = run_pipeline(
            instance, validate_dataset_key(args.dataset), run_config or {}, args.select, args.verbose
        )
        return 0 if succeeded else 1
    except InvalidDatasetKey as exc:
        print(f"arhn: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
