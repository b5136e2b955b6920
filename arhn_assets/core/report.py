"""Stage 6, report: configurations x metrics with deltas vs baseline, significance, and a chart."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import polars as pl

from arhn_assets.core.evaluation import METRICS, paired_tests

REFERENCE = "baseline"


REPORT_SCHEMA = {
    "dataset": pl.String,
    "eval_dataset": pl.String,
    "config": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "delta": pl.Float64,
    "p_ttest": pl.Float64,
    "p_wilcoxon": pl.Float64,
}


def comparison(scores: pl.DataFrame, query_scores: pl.DataFrame, reference: str = REFERENCE) -> pl.DataFrame:
    """One row per (eval_dataset, config, metric): the mean, and its delta vs `reference` with
    paired t-test and Wilcoxon p-values over the same queries (null for the reference itself)."""
    frames = []
    for (eval_dataset,), group in query_scores.group_by("eval_dataset", maintain_order=True):
        if reference in set(group["config"]):
            frames.append(paired_tests(group, reference).with_columns(eval_dataset=pl.lit(eval_dataset)))
    tests = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(schema={"config": pl.String, "metric": pl.String, "eval_dataset": pl.String})
    )
    means = scores.select("eval_dataset", "config", "metric", "value")
    # In the order of `scores`: the base model, then the configurations as refine produced them.
    return means.join(
        tests.drop("queries", strict=False), on=["eval_dataset", "config", "metric"], how="left", maintain_order="left"
    )


def frame_markdown(frame: pl.DataFrame, rows: int = 10, max_text: int = 80) -> str:
    """The first rows of `frame` as a markdown table, long texts and lists cut."""
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_cols=-1,
        tbl_rows=rows,
        fmt_str_lengths=max_text,
        fmt_table_cell_list_len=4,
        # No wrapping: a markdown row must stay on one line (polars' default wraps at 100
        # characters, which splits the header and breaks the table). 65535 is polars' maximum.
        tbl_width_chars=65535,
    ):
        return str(frame.head(rows))


def markdown_table(table: pl.DataFrame) -> str:
    """Configurations x metrics; each cell the mean, then delta and t-test p-value vs baseline."""
    lines = []
    for (eval_dataset,), group in table.group_by("eval_dataset", maintain_order=True):
        metrics = [m for m in METRICS if m in set(group["metric"])]
        lines += [
            f"**{eval_dataset}**",
            "",
            "| config | " + " | ".join(metrics) + " |",
            "|---|" + "---:|" * len(metrics),
        ]
        for (config,), rows in group.group_by("config", maintain_order=True):
            cells = []
            by_metric = {r["metric"]: r for r in rows.to_dicts()}
            for metric in metrics:
                row = by_metric[metric]
                cell = f"{row['value']:.4f}"
                if row.get("delta") is not None:
                    cell += f" ({row['delta']:+.4f}, p={row['p_ttest']:.3f})"
                cells.append(cell)
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Cells: mean over queries (delta vs {REFERENCE}, two-sided paired t-test p-value).")
    return "\n".join(lines)


def bar_chart(table: pl.DataFrame, path: Path) -> bytes:
    """A grouped bar chart (metrics x configurations) per evaluation dataset, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    groups = table.partition_by("eval_dataset", maintain_order=True)
    figure, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 4), squeeze=False)
    for axis, group in zip(axes[0], groups):
        configs = group["config"].unique(maintain_order=True).to_list()
        metrics = [m for m in METRICS if m in set(group["metric"])]
        width = 0.8 / max(1, len(configs))
        for i, config in enumerate(configs):
            values = dict(group.filter(pl.col("config") == config).select("metric", "value").iter_rows())
            axis.bar([m + i * width for m in range(len(metrics))], [values[m] for m in metrics], width, label=config)
        axis.set_xticks([m + width * (len(configs) - 1) / 2 for m in range(len(metrics))], metrics)
        axis.set_ylim(0, 1)
        axis.set_title(group["eval_dataset"][0])
        axis.legend(fontsize="small")
    return save_png(figure, path)


def save_png(figure, path: Path) -> bytes:
    """Write a matplotlib figure to `path` as PNG, close it, and return the bytes."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def image_markdown(png: bytes) -> str:
    return f"![retrieval report](data:image/png;base64,{base64.b64encode(png).decode()})"
