"""Scoring the judge: which flags each configuration should raise, the audit table, and its
agreement with the truth (scikit-learn's metrics)."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

AUDITED_CONFIGS = ("R", "F", "R+F")
# What each configuration does to a negative it flags (core/refine.py's decisions).
FLAGGING_DECISIONS = {
    "R": {"relabel_positive"},
    "F": {"filter_ambiguous"},
    "R+F": {"relabel_positive", "filter_ambiguous"},
}
# The labels a configuration should flag, per truth. Binary qrels cannot tell "more direct than
# the positive" (R) from "relevant, less direct" (F), so on planted truth every configuration is
# scored against every planted document; RLHN's verdicts make the distinction.
EXPECTED = {
    "qrels": {"R": {"planted"}, "F": {"planted"}, "R+F": {"planted"}},
    "verdicts": {"R": {"better"}, "F": {"worse"}, "R+F": {"better", "worse"}},
}
AUDIT_SCHEMA = {
    "dataset": pl.String,
    "judge": pl.String,  # llm | oracle | replay
    "model": pl.String,  # the judge's identity (model name and hash, or oracle:/replay: source)
    "truth": pl.String,  # qrels | verdicts
    "config": pl.String,
    "query_id": pl.String,
    "doc_id": pl.String,
    "label": pl.String,  # qrels: planted | negative; verdicts: better | worse | none
    "mining_rank": pl.Int64,  # rank in the corpus search (qrels) or position in the recorded list
    "rank_bucket": pl.String,
    "snippet_status": pl.String,
    "answer_probability": pl.Float64,  # stage 1's P(not NO_ANSWER); null for judges without one
    "llm_rank": pl.Int64,
    "positive_rank": pl.Int64,
    "ranking_status": pl.String,
    "decision": pl.String,
    "flagged": pl.Boolean,  # the configuration relabeled or filtered this negative
    "expected": pl.Boolean,  # the truth says it should have
}


# Recall levels at which the audit reports the precision of ranking negatives by answer_probability.
RECALL_LEVELS = (0.5, 0.8)
COUNTS = ("candidates", "expected", "flagged", "true_positives", "false_positives", "false_negatives", "true_negatives")
SCORES_SCHEMA = {
    "dataset": pl.String,
    "judge": pl.String,
    "model": pl.String,
    "truth": pl.String,
    "config": pl.String,
    "rank_bucket": pl.String,  # 'all' for the configuration as a whole, else a mining-rank bucket
    **dict.fromkeys(COUNTS, pl.Int64),
    "precision": pl.Float64,
    "recall": pl.Float64,
    "f1": pl.Float64,
    "kappa": pl.Float64,
    # How well answer_probability alone orders the negatives (rank_bucket 'all' only; null where
    # the judge gives no probability or the truth has a single label).
    "average_precision": pl.Float64,
    "roc_auc": pl.Float64,
    **{f"precision_at_recall_{level:g}": pl.Float64 for level in RECALL_LEVELS},
}


def bucket_labels(edges: Iterable[int]) -> list[str]:
    """'1-3', '4-10', '11-30', '31+' for edges (3, 10, 30): rank buckets, upper edges inclusive."""
    lows = [1, *(e + 1 for e in edges)]
    return [f"{low}-{edge}" for low, edge in zip(lows, edges)] + [f"{lows[-1]}+"]


def audit_table(
    decisions: pl.DataFrame,
    labels: pl.DataFrame,
    truth: str,
    judge: str,
    model: str,
    bucket_edges: Iterable[int] = (3, 10, 30),
) -> pl.DataFrame:
    """One row per (configuration, judged negative): the decision, whether it flags the
    negative, and whether the truth says it should (`AUDIT_SCHEMA`).

    decisions: `refine.decide`'s rows; labels: `label_candidates`' rows (query_id, doc_id,
    label, mining_rank); truth: 'qrels' or 'verdicts' (which labels each configuration should flag)."""
    edges = tuple(bucket_edges)
    expected = EXPECTED[truth]
    frames = []
    for config in AUDITED_CONFIGS:
        rows = decisions.filter((pl.col("config") == config) & (pl.col("original_label") == "negative"))
        frames.append(
            rows.join(labels, on=["query_id", "doc_id"], how="inner", maintain_order="left").with_columns(
                flagged=pl.col("decision").is_in(list(FLAGGING_DECISIONS[config])),
                expected=pl.col("label").is_in(list(expected[config])),
            )
        )
    table = pl.concat(frames).with_columns(
        judge=pl.lit(judge),
        model=pl.lit(model),
        truth=pl.lit(truth),
        rank_bucket=pl.col("mining_rank")
        .cut(list(edges), labels=bucket_labels(edges))
        .cast(pl.String)
        .fill_null("unranked"),
    )
    return table.select(AUDIT_SCHEMA.keys()).cast(AUDIT_SCHEMA)


def agreement(table: pl.DataFrame, by: str | None = None) -> pl.DataFrame:
    """Per configuration (and `by` group, e.g. 'rank_bucket'): counts of candidates, expected
    and flagged negatives and their confusion matrix, precision, recall, F1 and Cohen's kappa
    of the flags against the truth (`audit_table`'s `flagged` and `expected` columns)."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    rows = []
    for config in AUDITED_CONFIGS:
        judged = table.filter(pl.col("config") == config)
        # Groups in rank order, so rank buckets read from the top of the mined list down.
        ordered = judged.sort("mining_rank", nulls_last=True, maintain_order=True)
        groups = ordered.group_by(by, maintain_order=True) if by else [((None,), judged)]
        for (group,), frame in groups:
            actual, predicted = frame["expected"].to_list(), frame["flagged"].to_list()
            if not actual:
                continue
            precision, recall, f1, _ = precision_recall_fscore_support(
                actual, predicted, average="binary", zero_division=0.0
            )
            # kappa is undefined when both raters give a single label; report agreement as 1 then.
            kappa = cohen_kappa_score(actual, predicted) if len(set(actual) | set(predicted)) > 1 else 1.0
            (tn, fp), (fn, tp) = confusion_matrix(actual, predicted, labels=[False, True])
            rows.append(
                {
                    "config": config,
                    **({by: group} if by else {}),
                    "candidates": len(actual),
                    "expected": int(tp + fn),
                    "flagged": int(tp + fp),
                    "true_positives": int(tp),
                    "false_positives": int(fp),
                    "false_negatives": int(fn),
                    "true_negatives": int(tn),
                    "precision": float(precision),
                    "recall": float(recall),
                    "f1": float(f1),
                    "kappa": float(kappa),
                }
            )
    return pl.DataFrame(rows)


def score_quality(table: pl.DataFrame, recall_levels: Iterable[float] = RECALL_LEVELS) -> pl.DataFrame:
    """Per configuration: how well `answer_probability` alone orders the judged negatives, the
    expected ones first: average precision, ROC AUC, and the precision at each recall level (the
    best precision of any threshold that reaches it). Nulls where the judge gives no probability
    or the truth has a single label."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    rows = []
    for config in AUDITED_CONFIGS:
        frame = table.filter(pl.col("config") == config)
        actual, score = frame["expected"].to_list(), frame["answer_probability"].to_list()
        row: dict[str, object] = {"config": config}
        usable = bool(actual) and None not in score and len(set(actual)) == 2
        precision, recall, _ = precision_recall_curve(actual, score) if usable else ([], [], [])
        row["average_precision"] = float(average_precision_score(actual, score)) if usable else None
        row["roc_auc"] = float(roc_auc_score(actual, score)) if usable else None
        for level in recall_levels:
            reached = [p for p, r in zip(precision, recall) if r >= level]
            row[f"precision_at_recall_{level:g}"] = float(max(reached)) if reached else None
        rows.append(row)
    return pl.DataFrame(rows)


def audit_scores(table: pl.DataFrame) -> pl.DataFrame:
    """The audit's figures in one table (`SCORES_SCHEMA`): per configuration overall (rank_bucket
    'all', with the answer_probability scores) and per mining-rank bucket. The one computation of
    them: the asset metadata, the report and the warehouse's judge_agreement all read it."""
    if table.is_empty():
        return pl.DataFrame(schema=SCORES_SCHEMA)
    first = table.row(0, named=True)
    keys = {name: pl.lit(first[name], dtype=pl.String) for name in ("dataset", "judge", "model", "truth")}
    overall = (
        agreement(table).join(score_quality(table), on="config", how="left").with_columns(rank_bucket=pl.lit("all"))
    )
    scores = pl.concat([overall, agreement(table, by="rank_bucket")], how="diagonal_relaxed").with_columns(**keys)
    return scores.select(SCORES_SCHEMA.keys()).cast(SCORES_SCHEMA)
