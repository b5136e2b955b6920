"""The LLM stages as a Dagster Pipes worker: `python -m arhn_assets.workers.llm_stage`.

Launched by the `language_model` resource when it runs out of process (always for vLLM, so the
GPU memory is freed when this process exits at the end of the step; on request for the other
backends). The worker needs only dagster-pipes, polars and arhn's core modules, not Dagster itself.
It reads its inputs from Parquet files the step wrote, runs the same `run_stage` the in-process
path runs, writes the output Parquet and reports the call statistics back as a custom message.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import polars as pl

from arhn_assets.core.llm.backends import BackendSpec, build_backend
from arhn_assets.core.llm.base import LLMBackend
from arhn_assets.core.llm.cache import CallCache, CallStats
from arhn_assets.core.progress import Log
from arhn_assets.core.rankings import RankingConfig, rank_candidates
from arhn_assets.core.snippets import SnippetConfig, extract_snippets

STAGES = ("answer_snippets", "answerability_rankings")


def run_stage(
    stage: str,
    frames: dict[str, pl.DataFrame],
    options: dict,
    backend: LLMBackend,
    cache: CallCache,
    batch_size: int,
    log: Log | None = None,
) -> tuple[pl.DataFrame, CallStats]:
    """One LLM stage over `frames` (candidates, triplets, passages[, snippets]), with the stage's
    settings as `options`, `batch_size` requests per backend call, and progress lines to `log`."""
    if stage == "answer_snippets":
        return extract_snippets(
            frames["candidates"],
            frames["triplets"],
            frames["passages"],
            backend,
            cache,
            SnippetConfig(**options),
            batch_size,
            log,
        )
    if stage == "answerability_rankings":
        return rank_candidates(
            frames["candidates"],
            frames["triplets"],
            frames["passages"],
            frames["snippets"],
            backend,
            cache,
            RankingConfig(**options),
            batch_size,
            log,
        )
    raise ValueError(f"unknown LLM stage {stage!r}; choose from {STAGES}")


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        stage = extras["stage"]
        frames = {name: pl.read_parquet(path) for name, path in extras["inputs"].items()}
        spec = BackendSpec.from_json(extras["backend"])
        backend = build_backend(spec, Path(extras["models_cache"]))
        pipes.log.info(
            f"{stage}: {frames['candidates'].height} candidates on {spec.backend} backend {backend.identity}"
        )
        cache = CallCache(Path(extras["call_cache"]))
        try:
            frame, stats = run_stage(stage, frames, extras["options"], backend, cache, spec.batch_size, pipes.log.info)
        finally:
            cache.close()
        output = Path(extras["output"])
        tmp = output.with_name(f".{output.name}.tmp")
        frame.write_parquet(tmp)
        os.replace(tmp, output)
        pipes.log.info(f"{stage}: {stats.calls} calls, {stats.cache_hits} cache hits")
        pipes.report_custom_message({"stats": asdict(stats), "model": backend.identity})


if __name__ == "__main__":
    main()
