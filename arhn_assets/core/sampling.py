"""Which training queries a run uses: all of them, the first N, or a seeded random sample of N.

Declared once per run (the `query_sample` resource) and applied where queries enter: ingest, so
mining, both LLM stages, refinement and training see the same queries, and the judge audit's
query set. A seeded sample does not depend on the order queries are listed in beyond the list
itself: the same ids and seed give the same sample.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl


@dataclass(frozen=True)
class QuerySample:
    """The queries a run uses: every query (size null), the first `size`, or `size` drawn at random with `seed`."""

    size: int | None = field(default=None, metadata={"doc": "queries to use; null = all"})
    method: Literal["first", "seeded"] = field(
        default="first", metadata={"doc": "first: in input order; seeded: a random sample"}
    )
    seed: int = 42

    def __post_init__(self):
        if self.size is not None and self.size < 1:
            raise ValueError(f"query_sample.size must be at least 1 (or null for every query), got {self.size}")

    def pick(self, query_ids: Sequence[str]) -> list[str]:
        """The sampled ids, in the order given."""
        unique = list(dict.fromkeys(query_ids))
        if self.size is None or self.size >= len(unique):
            return unique
        if self.method == "first":
            return unique[: self.size]
        chosen = set(random.Random(self.seed).sample(unique, self.size))
        return [q for q in unique if q in chosen]

    def apply(self, frame: pl.DataFrame, column: str = "query_id") -> pl.DataFrame:
        """The rows of `frame` whose `column` holds a sampled query id."""
        if self.size is None:
            return frame
        return frame.filter(pl.col(column).is_in(self.pick(frame[column].to_list())))

    def describe(self) -> str:
        if self.size is None:
            return "all queries"
        return (
            f"the first {self.size} queries"
            if self.method == "first"
            else f"{self.size} queries sampled with seed {self.seed}"
        )
