"""Dagster metadata helpers shared by the asset wiring (previews, rounded numbers)."""

from __future__ import annotations

import dagster as dg
import polars as pl

from arhn_assets.core.report import frame_markdown


def markdown_preview(frame: pl.DataFrame, rows: int = 10, max_text: int = 80) -> dg.MarkdownMetadataValue:
    """The first rows as a markdown table, long texts and lists cut so the UI stays readable."""
    return dg.MetadataValue.md(frame_markdown(frame, rows, max_text))


def rounded(values: dict, digits: int = 4) -> dict:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in values.items()}


def llm_call_metadata(stats, statuses: pl.Series, model: str) -> dict:
    """What an LLM stage cost and how its outputs parsed (stats: core.llm.cache.CallStats)."""
    return {
        "model": model,
        "llm_calls": stats.calls,
        "cache_hits": stats.cache_hits,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "completion_tokens_per_second": round(stats.completion_tokens_per_second, 1),
        "generate_seconds": round(stats.generate_seconds, 1),
        "status_counts": dict(statuses.value_counts().iter_rows()),
    }
