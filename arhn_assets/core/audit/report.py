"""The audit report: Markdown tables and a PNG chart of the agreement metrics."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from arhn_assets.core.audit.scoring import COUNTS
from arhn_assets.core.report import frame_markdown, save_png


def overall(scores: pl.DataFrame) -> pl.DataFrame:
    """The per-configuration rows of the audit's scores (`audit_scores`), without their keys."""
    return scores.filter(pl.col("rank_bucket") == "all").drop("dataset", "judge", "model", "truth", "rank_bucket")


def audit_markdown(title: str, facts: dict[str, object], scores: pl.DataFrame) -> str:
    """The audit report: what was audited, then per configuration the confusion counts and
    scores, overall and by mining rank."""
    lines = [f"# {title}", ""] + [f"- {name}: {value}" for name, value in facts.items()]
    by_rank = scores.filter(pl.col("rank_bucket") != "all").select(
        "config", "rank_bucket", *COUNTS, "precision", "recall", "f1", "kappa"
    )
    for heading, frame in (("Per configuration", overall(scores)), ("By mining rank", by_rank)):
        lines += ["", f"## {heading}", "", frame_markdown(frame.with_columns(pl.col(pl.Float64).round(4)), rows=200)]
    lines += [
        "",
        "Flagged = relabeled (R), filtered (F), either (R+F); expected = what the truth says of the negative.",
        "Precision, recall and F1 of the flags, and Cohen's kappa of flags vs truth (scikit-learn).",
    ]
    return "\n".join(lines)


def audit_chart(scores: pl.DataFrame, title: str, path: Path) -> bytes:
    """One confusion matrix per configuration and a precision/recall/F1 bar chart, as PNG."""
    metrics = overall(scores)
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    rows = metrics.to_dicts()
    figure, axes = plt.subplots(1, len(rows) + 1, figsize=(4 * (len(rows) + 1), 3.8), squeeze=False)
    for axis, row in zip(axes[0], rows):
        matrix = np.array(
            [[row["true_negatives"], row["false_positives"]], [row["false_negatives"], row["true_positives"]]]
        )
        ConfusionMatrixDisplay(matrix, display_labels=["clean", "false neg."]).plot(
            ax=axis, colorbar=False, values_format="d"
        )
        axis.set(title=row["config"], xlabel="flagged by the judge", ylabel="truth")
    bars = axes[0][-1]
    scores = ("precision", "recall", "f1")
    for i, score in enumerate(scores):
        bars.bar([c + i * 0.27 for c in range(len(rows))], [row[score] for row in rows], 0.27, label=score)
    bars.set_xticks([c + 0.27 for c in range(len(rows))], [row["config"] for row in rows])
    bars.set(ylim=(0, 1.05), title="flags vs truth")
    bars.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    return save_png(figure, path)
