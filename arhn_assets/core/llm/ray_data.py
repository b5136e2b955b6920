"""`RayDataBackend`: the LLM backend protocol over Ray Data, for `language_model.execution: ray`.

`generate` turns its requests into one Ray Dataset and runs it through a processor
(`ray_processors`: llama.cpp actors on CPU, HTTP requests to an OpenAI-compatible server;
`ray_vllm`: vLLM engines on GPUs), on the Ray cluster this process is connected to (a local one
when it is not). The stage code and `cached_generate` are unchanged: the call cache still decides
which calls are missing and stores what comes back, and the backend's identity is the inner
model's, so a Ray run and an in-process run share the cache and give the same rows. The stages
hand it a whole pass at a time (every snippet, or one sliding-window pass of every query), so
each pass is one Ray job and the passes stay in order.

On a cluster the SQLite cache is written by the driver only; the workers write their results as
Parquet shards under `<shards_root>/<model identity hash>/` (a shared volume) as each batch
finishes. `generate` first reads them and sends only the requests without one, so a job or a
worker killed midway, then rerun, repeats no call whose result was written. A request that fails
on its own comes back as a completion with `error` (status `error` in the stage's table, never
cached, retried on the next run). A job that fails raises `RayJobError` with Ray's error and the
rows done, keeping what finished (in the shards, and in the call cache through PartialBatchError).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from arhn_assets.core.llm.backends import BackendSpec, served_model
from arhn_assets.core.llm.base import Completion, GenerationRequest, PartialBatchError, Progress
from arhn_assets.core.llm.ray_processors import EmbeddedProcessor, HttpProcessor
from arhn_assets.core.llm.ray_rows import (
    compact_shards,
    completion_from_row,
    read_shards,
    request_key,
    request_row,
    shard_dir,
)
from arhn_assets.core.llm.ray_vllm import VLLMProcessor
from arhn_assets.core.progress import Log

# Ray Data's own progress report every 10 s is several lines; these of it reach the run's log.
PROGRESS_LINES = ("Total Progress", "Active & requested resources")


class RayProcessor(Protocol):
    identity: str
    replicas: int
    batch_size: int

    @property
    def cpus_reserved(self) -> float: ...

    @property
    def gpus_reserved(self) -> float: ...

    def describe(self) -> str: ...

    def check(self) -> None: ...

    def apply(self, dataset, folder: str): ...


class RayJobError(PartialBatchError):
    """The Ray Data job failed; `completed` holds the requests whose results were kept."""


@dataclass
class RayRun:
    """One `generate` call: the requests it was given, those found in the shards, and those the
    Ray job answered (of which `failed` came back with an error)."""

    requests: int
    from_shards: int
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0


class _ToLog(logging.Handler):
    """Ray Data's log records as lines of `log` (its progress reduced to `PROGRESS_LINES`)."""

    def __init__(self, log: Log):
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if "progress" in record.name and not message.startswith(PROGRESS_LINES):
            return
        if message:
            self.log(f"ray.data: {message}")


@contextlib.contextmanager
def ray_logs_to(log: Log | None):
    """Ray Data's logs of the driver (plan, start, end, progress, warnings) also go to `log`."""
    if log is None:
        yield
        return
    handler, logger = _ToLog(log), logging.getLogger("ray.data")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@dataclass
class RayDataBackend:
    processor: RayProcessor
    shards_root: Path  # $ARHN_HOME/cache/llm_ray: a volume every worker can write on a cluster
    log: Log | None = None
    runs: list[RayRun] = field(default_factory=list)

    @property
    def identity(self) -> str:
        return self.processor.identity

    @property
    def folder(self) -> Path:
        return shard_dir(self.shards_root, self.identity)

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[Completion]:
        """One Ray job for the requests that have no shard; completions in request order."""
        keys = [request_key(self.identity, r) for r in requests]
        unique = dict(zip(keys, requests))
        results = read_shards(self.folder, set(unique))
        run = RayRun(len(unique), len(results))
        self.runs.append(run)
        if progress is not None and results:
            progress(sum(1 for k in keys if k in results))
        todo = [(k, r) for k, r in unique.items() if k not in results]
        if todo:
            self.processor.check()
            self._run_job(todo, results, run, progress, keys)
            compact_shards(self.folder)
        return [results[k] for k in keys]

    def _run_job(self, todo, results: dict[str, Completion], run: RayRun, progress, keys: list[str]) -> None:
        import ray

        dataset = ray.data.from_items([request_row(k, r) for k, r in todo])
        self._check_slots(ray.cluster_resources())
        self._say(
            f"Ray Data job: {len(todo)} requests on {self.processor.describe()} "
            f"({run.from_shards} already written under {self.folder})"
        )
        began = time.perf_counter()
        try:
            with ray_logs_to(self.log):
                output = self.processor.apply(dataset, str(self.folder))
                for batch in output.iter_batches(batch_size=None, batch_format="pyarrow"):
                    rows = batch.to_pylist()
                    results.update((row["key"], completion_from_row(row)) for row in rows)
                    run.answered += len(rows)
                    run.failed += sum(1 for row in rows if row["error"] is not None)
                    if progress is not None:
                        progress(len(rows))
        except Exception as error:
            raise self._job_error(error, todo, results, run, keys) from error
        finally:
            run.seconds = time.perf_counter() - began
        self._say(f"Ray Data job done: {run.answered} answered ({run.failed} failed) in {run.seconds:.1f} s")

    def _check_slots(self, resources: dict) -> None:
        """Warn when the processor's actors would take every CPU (Ray Data then has none left for
        its own tasks and waits) or the cluster has fewer GPUs than the engines ask for. A warning,
        not an error: an autoscaling cluster grows once the job asks."""
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if self.processor.cpus_reserved and cpus < self.processor.cpus_reserved + 1:
            self._say(
                f"warning: the Ray cluster has {cpus:g} CPUs and the replicas reserve "
                f"{self.processor.cpus_reserved:g}: Ray Data needs one more for its own tasks or it waits; "
                "lower ray_replicas or ray_cpus_per_replica, or add CPUs"
            )
        if gpus < self.processor.gpus_reserved:
            self._say(
                f"warning: the Ray cluster has {gpus:g} GPUs now and the engines ask for "
                f"{self.processor.gpus_reserved:g}; the job waits until the cluster has them"
            )

    def _job_error(self, error: Exception, todo, results, run: RayRun, keys: list[str]) -> RayJobError:
        """The job's failure, with the rows done: those that came back and those written to shards
        (which the driver may not have received yet) are kept."""
        written = read_shards(self.folder, {k for k, _ in todo})
        for key, completion in written.items():
            results.setdefault(key, completion)
        completed = {i: results[k] for i, k in enumerate(keys) if k in results and results[k].error is None}
        return RayJobError(
            f"the Ray Data job on {self.processor.describe()} failed after {run.answered} of {len(todo)} "
            f"requests came back ({len(written)} written under {self.folder}, kept: a rerun sends only the "
            f"rest): {type(error).__name__}: {error}",
            completed,
        )


def build_ray_processor(spec: BackendSpec, models_cache: Path) -> RayProcessor:
    """The processor for `spec.backend`: embedded → llama.cpp actors, openai → HTTP requests to the
    server, vllm → vLLM engines; `ray_replicas` of them, `ray_batch_size` rows per batch (and shard)."""
    common = {"replicas": spec.ray_replicas, "batch_size": spec.ray_batch_size}
    if spec.backend == "embedded":
        return EmbeddedProcessor(
            spec.model, models_cache, cpus_per_replica=spec.ray_cpus_per_replica, threads=spec.threads,
            context_size=spec.context_size, **common,
        )  # fmt: skip
    if spec.backend == "openai":
        return HttpProcessor(
            spec.base_url, served_model(spec), spec.model_revision, spec.api_key_env, spec.guided_decoding,
            spec.timeout_seconds, spec.max_retries, cpus_per_replica=spec.ray_cpus_per_replica, **common,
        )  # fmt: skip
    if spec.backend == "vllm":
        return VLLMProcessor(
            served_model(spec), spec.model_revision or None, spec.tensor_parallel_size,
            spec.gpu_memory_utilization, spec.max_model_len, **common,
        )  # fmt: skip
    raise ValueError(f"unknown LLM backend {spec.backend!r}; choose 'embedded', 'openai' or 'vllm'")


def build_ray_backend(spec: BackendSpec, models_cache: Path, shards_root: Path, log: Log | None = None):
    """`spec`'s model behind Ray Data, its shards under `shards_root` ($ARHN_HOME/cache/llm_ray)."""
    return RayDataBackend(build_ray_processor(spec, models_cache), shards_root, log)
