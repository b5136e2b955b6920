"""What `arhn run` prints: a line when a step starts and one when it ends (its duration and the
key figures of what it materialized), the lines the assets log, failures and warnings in full;
then a summary table of the run and where to look at what it wrote.

Only Dagster's own records are read, never its text: `compact_console` is a Dagster logger
(declared for every job in defs/loggers.py; the CLI selects it in the run config's `loggers`,
which leaves Dagster's DEBUG console logger out) that reads the event each log record carries,
and the summary is built from the run's event records in the instance. The instance's event log,
which the UI reads, is written exactly as before.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

LOGGER_KEY = "arhn_console"
DAGSTER_SOURCE = str(Path(dg.__file__).parent) + os.sep  # a traceback only through here is Dagster's own
UI_ADDRESS = "http://127.0.0.1:3000"  # where `make dev` serves the UI
Event = dg.DagsterEventType
RUN_EVENTS = {Event.RUN_START, Event.RUN_SUCCESS, Event.RUN_FAILURE}
STEP_EVENTS = {Event.STEP_START, Event.STEP_SUCCESS, Event.STEP_FAILURE, Event.STEP_SKIPPED}
SUMMARY_EVENTS = RUN_EVENTS | STEP_EVENTS | {Event.ASSET_MATERIALIZATION, Event.ASSET_CHECK_EVALUATION}


# --- key figures: the 1-3 numbers of each asset's materialization metadata that matter ---


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pct(value: float) -> str:
    return f"{value:.1%}"


def markdown_rows(table: str) -> list[dict[str, str]]:
    """The rows of a markdown table as metadata previews write it (core.report.frame_markdown)."""
    lines = [line.strip() for line in str(table).splitlines() if line.strip().startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    if len(cells) < 2:
        return []
    return [dict(zip(cells[0], row)) for row in cells[2:] if len(row) == len(cells[0])]


def _llm_calls(m: Mapping) -> str:
    return f"{_n(m['llm_calls'])} LLM calls ({_n(m['cache_hits'])} cached)"


def _snippets(m: Mapping) -> list[str]:
    """Calls, then how many candidates the judge said answer and how many of those are grounded
    (a groundedness rate over no answer would read as a failure)."""
    statuses = m.get("status_counts") or {}
    answered = statuses.get("answer", 0) + statuses.get("ungrounded", 0)
    figures = [_llm_calls(m), f"{_n(answered)}/{_n(sum(statuses.values()))} answered"]
    return figures + [f"{_pct(m['groundedness_rate'])} grounded"] if answered else figures


def _rankings(m: Mapping) -> list[str]:
    statuses = m.get("status_counts") or {}
    return [_llm_calls(m), f"{_n(statuses.get('ok', 0))}/{_n(sum(statuses.values()))} rankings valid"]


def _relabel_rates(m: Mapping) -> list[str]:
    rows = markdown_rows(m["summary"])
    relabel = max((float(row["relabel_rate"]) for row in rows), default=0.0)
    filtered = max((float(row["filter_rate"]) for row in rows), default=0.0)
    return [f"relabel rate {_pct(relabel)}", f"filter rate {_pct(filtered)}"]


def _ndcg(m: Mapping) -> list[str]:
    """nDCG@10 of the base model and of the best trained one, per evaluation dataset (two at most)."""
    rows = markdown_rows(m["scores"])
    figures = []
    for eval_dataset in list(dict.fromkeys(row["eval_dataset"] for row in rows))[:2]:
        scores = {row["config"]: float(row["ndcg@10"]) for row in rows if row["eval_dataset"] == eval_dataset}
        base = scores.pop("base", None)
        parts = [f"base {base:.3f}"] if base is not None else []
        if scores:
            best = max(scores, key=scores.__getitem__)
            parts.append(f"best {best} {scores[best]:.3f}")
        figures.append(f"nDCG@10 {eval_dataset}: {', '.join(parts)}")
    return figures


def _audit(m: Mapping) -> list[str]:
    f1 = {key.removesuffix("_f1"): value for key, value in m.items() if key.endswith("_f1")}
    calls = sum(value for key, value in m.items() if key.endswith("_calls"))
    return [f"F1 {', '.join(f'{config} {value:.2f}' for config, value in f1.items())}", f"{_n(calls)} LLM calls"]


def _negatives(counts: Any) -> str:
    """Negatives by source ({'mined': 60, 'reserve': 30} -> '60 mined + 30 reserve'), zeros left out."""
    if not isinstance(counts, Mapping):
        return _n(counts)
    return " + ".join(f"{_n(n)} {source}" for source, n in counts.items() if n) or "0"


# Per asset, in the order its figures are shown when a step materializes several.
FIGURES: dict[str, Callable[[Mapping], list[str]]] = {
    "raw_triplets": lambda m: [f"{_n(m['queries'])} queries"],
    "raw_passages": lambda m: [f"{_n(m['dagster/row_count'])} passages"],
    "raw_triplets_quarantine": lambda m: [f"{_n(m['dagster/row_count'])} quarantined"],
    "mined_negatives": lambda m: [
        f"{_negatives(m['negatives'])} negatives for {_n(m['queries'])} queries",
        f"{_n(m['passages_encoded'])} passages encoded ({_n(m['embedding_cache_hits'])} cached)",
    ],
    "answer_snippets": _snippets,
    "answerability_rankings": _rankings,
    "relabel_decisions": _relabel_rates,
    "refined_triplets": lambda m: [f"{_n(m['dagster/row_count'])} rows", f"{_n(m['files'])} export files"],
    "refine_summary": lambda m: [f"{_n(m['dagster/row_count'])} configurations"],
    "trained_retriever": lambda m: [f"{_n(m['models'])} models"],
    "beir_scores": _ndcg,
    "beir_query_scores": lambda m: [f"{_n(m['queries'])} queries scored"],
    "retrieval_report": lambda m: ["report written"],
    "judge_audit": _audit,
    "judge_audit_scores": lambda m: [],
}


def asset_figures(asset: str, metadata: Mapping[str, Any]) -> list[str]:
    """The key figures of one materialization; its row count for an asset not in FIGURES (or
    whose metadata lacks a figure's entry: the output never fails over a figure)."""
    try:
        return FIGURES[asset](metadata)
    except (KeyError, TypeError, ValueError):
        rows = metadata.get("dagster/row_count")
        return [f"{asset} {_n(rows)} rows"] if rows is not None else []


# --- what each step did, from its events (live in the logger, or afterwards from the instance) ---


@dataclass
class StepRecord:
    key: str
    status: str = "not run"
    started: float | None = None
    seconds: float | None = None
    outputs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    checks: list[bool] = field(default_factory=list)

    def figures(self) -> str:
        order = list(FIGURES)
        known = sorted((output for output in self.outputs if output[0] in FIGURES), key=lambda o: order.index(o[0]))
        others = [(a, m) for a, m in self.outputs if a not in FIGURES]
        figures = [figure for asset, metadata in known for figure in asset_figures(asset, metadata)]
        if len(others) == 1:
            figures += asset_figures(*others[0])
        elif others:
            figures.append(f"{len(others)} assets materialized")
        if self.checks:
            figures.append(f"{sum(self.checks)}/{len(self.checks)} checks passed")
        return ", ".join(figures)


def innermost_error(error: SerializableErrorInfo) -> SerializableErrorInfo:
    """The user's own error of a failed step: Dagster wraps it in DagsterExecutionStepExecutionError."""
    while error.cause is not None:
        error = error.cause
    return error


def metadata_lines(metadata: Mapping[str, dg.MetadataValue]) -> list[str]:
    """`name: value` per entry; a value of several lines (a markdown table) starts on the next one."""
    values = {key: str(value.value) for key, value in metadata.items()}
    return [f"{key}:\n{text}" if "\n" in text else f"{key}: {text}" for key, text in values.items()]


def failure_lines(event: dg.DagsterEvent) -> list[str]:
    """A step's failure in full: the user's error message, the metadata of a dg.Failure, or the
    traceback of any other exception (unless it passes through Dagster's code only)."""
    data = event.step_failure_data
    error = innermost_error(data.error) if data.error else None
    failure = data.user_failure_data
    if failure is not None and failure.description:
        return failure.description.strip().splitlines() + metadata_lines(failure.metadata)
    lines = error.message.strip().splitlines() if error else []
    if error is not None and any(f'File "{DAGSTER_SOURCE}' not in frame for frame in error.stack):
        lines += ["Traceback (most recent call last):", *"".join(error.stack).rstrip().splitlines()]
    return lines


def check_lines(evaluation: dg.AssetCheckEvaluation) -> list[str]:
    severity = evaluation.severity.value if evaluation.severity else "ERROR"
    lines = [f"check {evaluation.asset_check_key.to_user_string()} failed ({severity}): {evaluation.description or ''}"]
    return lines + metadata_lines(evaluation.metadata)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class RunTally:
    """The steps of one run and what they did, fed one Dagster event at a time."""

    def __init__(self) -> None:
        self.steps: dict[str, StepRecord] = {}
        self.started: float | None = None
        self.ended: float | None = None
        self.status = "running"

    def step(self, key: str) -> StepRecord:
        return self.steps.setdefault(key, StepRecord(key))

    def add(self, timestamp: float, event: dg.DagsterEvent) -> list[str] | None:
        """The lines this event prints ([] for none), or None for an event of no interest here."""
        kind = event.event_type
        if kind in RUN_EVENTS:
            return self._run_event(timestamp, event)
        if event.step_key is None or kind not in SUMMARY_EVENTS:
            return None
        step = self.step(event.step_key)
        if kind == Event.STEP_START:
            step.status, step.started = "running", timestamp
            return ["started"]
        if kind == Event.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            metadata = {key: value.value for key, value in materialization.metadata.items()}
            step.outputs.append((materialization.asset_key.to_user_string(), metadata))
            return []
        if kind == Event.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            step.checks.append(evaluation.passed)
            return [] if evaluation.passed else check_lines(evaluation)
        if kind == Event.STEP_SKIPPED:
            step.status = "skipped"
            return ["skipped"]
        step.seconds = (
            event.step_success_data.duration_ms / 1000
            if kind == Event.STEP_SUCCESS
            else timestamp - (step.started or timestamp)
        )
        if kind == Event.STEP_SUCCESS:
            step.status = "ok" if all(step.checks) else "check failed"
            return [f"done in {duration(step.seconds)}" + (f": {figures}" if (figures := step.figures()) else "")]
        step.status = "FAILED"
        return [f"FAILED after {duration(step.seconds)}", *failure_lines(event)]

    def _run_event(self, timestamp: float, event: dg.DagsterEvent) -> list[str]:
        if event.event_type == Event.RUN_START:
            self.started = timestamp
            return []
        self.ended = timestamp
        self.status = "succeeded" if event.event_type == Event.RUN_SUCCESS else "failed"
        data = event.event_specific_data  # JobFailureData on a failure
        if self.status == "succeeded" or getattr(data, "first_step_failure_event", None) is not None:
            return []  # the summary says it; the failed step has been printed in full
        return [event.message or "run failed", *_event_error(event)]


# --- the logger ---


def _print(timestamp: float, source: str, lines: list[str], stream) -> None:
    if not lines:
        return
    clock = time.strftime("%H:%M:%S", time.localtime(timestamp))
    rest = [part for line in lines[1:] for part in str(line).splitlines()]
    text = "\n".join([f"{clock} {source}: {lines[0]}", *(f"    {line}" for line in rest)])
    print(text, file=stream, flush=True)


def _event_error(event: dg.DagsterEvent | None) -> list[str]:
    error = getattr(event.event_specific_data, "error", None) if event is not None else None
    return error.to_string().splitlines() if error is not None else []


class CompactHandler(logging.Handler):
    """Prints a run's records compactly, reading the Dagster event each record carries: the
    step events through RunTally, the assets' own lines at INFO and above, and any other
    Dagster event at WARNING and above (with its error)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tally = RunTally()
        # The console as the run starts: a step that redirects stdout for a while (the warehouse
        # sends dbt's echo to the DEBUG log) must not carry these lines along.
        self.stream = sys.stdout

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        source = meta.get("step_key") or (f"resource {meta['resource_name']}" if meta.get("resource_name") else "run")
        lines = self.tally.add(record.created, event) if event is not None else None
        threshold = logging.INFO if event is None else logging.WARNING
        if lines is None and record.levelno >= threshold:
            text = str(meta.get("orig_message") or record.getMessage()).splitlines() or [""]
            label = "" if record.levelno == logging.INFO else f"{record.levelname}: "
            lines = [label + text[0], *text[1:], *_event_error(event)]
        _print(record.created, source, lines or [], self.stream)


@dg.logger(
    description="arhn run's console: a line per step start and end with its key figures, the assets' own "
    "log lines, warnings and failures in full; no DEBUG event."
)
def compact_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger(f"arhn.run.{init_context.run_id}", logging.DEBUG)
    logger.addHandler(CompactHandler())
    return logger


# --- after the run: the summary table and where to look ---


def run_tally(instance: dg.DagsterInstance, run_id: str) -> RunTally:
    """The run's steps from its event records in the instance, with the planned steps that never started."""
    tally = RunTally()
    for entry in instance.all_logs(run_id, of_type=SUMMARY_EVENTS):
        if entry.dagster_event is not None:
            tally.add(entry.timestamp, entry.dagster_event)
    run = instance.get_run_by_id(run_id)
    if run is not None and run.execution_plan_snapshot_id:
        for key in instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).step_keys_to_execute:
            tally.step(key)
    return tally


def summary_lines(tally: RunTally, run_id: str) -> list[str]:
    rows = [("step", "status", "time", "key figures")]
    rows += [(s.key, s.status, duration(s.seconds), s.figures()) for s in tally.steps.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    table = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    counts = Counter(step.status for step in tally.steps.values())
    total = duration(tally.ended - tally.started) if tally.started and tally.ended else "?"
    breakdown = ", ".join(f"{count} {status}" for status, count in counts.items())
    headline = f"arhn: run {run_id} {tally.status} in {total}; {len(tally.steps)} steps: {breakdown}"
    return ["", headline, "", *table]


def where_to_look(home: Path, dataset: str, run_id: str) -> list[str]:
    report = home / "reports" / dataset / "report.md"
    warehouse = home / "warehouse.duckdb"
    exports = home / "exports" / dataset
    query = f"select * from relabel_summary where dataset = '{dataset}'"
    lines = [
        f"report     {report}" if report.exists() else "report     none yet (retrieval_report writes it)",
        f'warehouse  {warehouse}  (duckdb -readonly {shlex.quote(str(warehouse))} "{query}")'
        if warehouse.exists()
        else f"warehouse  none yet (arhn run --dataset {dataset} --select 'group:warehouse' builds it)",
        f"exports    {exports}/" if exports.is_dir() else "exports    none yet (refined_triplets writes them)",
        f"lake       {home / 'lake'}/<asset>/dataset={dataset}/",
        f"UI         make dev, then {UI_ADDRESS}/runs/{run_id}",
    ]
    return ["", "Where to look:", *(f"  {line}" for line in lines)]


def print_summary(instance: dg.DagsterInstance, run_id: str, home: Path, dataset: str) -> None:
    lines = summary_lines(run_tally(instance, run_id), run_id) + where_to_look(home, dataset, run_id)
    print("\n".join(lines), flush=True)
