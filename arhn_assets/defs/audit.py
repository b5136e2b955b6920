"""`judge_audit`: the relabeling judge scored against known false negatives, before GPU hours go
into relabeling a large collection (core/audit.py). Not part of the main job: run it on its own."""

import time
from pathlib import Path

import dagster as dg
import polars as pl

from arhn_assets.core.audit import AuditConfig, audit_chart, audit_markdown, run_audit
from arhn_assets.core.beir_io import load_beir_dataset
from arhn_assets.core.instructions import resolve_instruction
from arhn_assets.core.paths import validate_dataset_key
from arhn_assets.core.report import image_markdown
from arhn_assets.dagster_config import config_from_dataclass
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage, EmbeddingModel, LanguageModel
from arhn_assets.execution import GPU_POOL, gpu_op_tags
from arhn_assets.metadata import markdown_preview

AUDIT_GROUP = "audit"
JudgeAuditConfig = config_from_dataclass(
    "JudgeAuditConfig", AuditConfig, "Which judge to audit against which truth (core.audit.AuditConfig)."
)


@dg.asset(partitions_def=dataset_partitions, group_name=AUDIT_GROUP, kinds={"llm", "polars", "parquet"}, pool=GPU_POOL, op_tags=gpu_op_tags())
def judge_audit(
    context: dg.AssetExecutionContext,
    config: JudgeAuditConfig,
    storage: ArhnStorage,
    embedding_model: EmbeddingModel,
    language_model: LanguageModel,
) -> dg.Output[pl.DataFrame]:
    """Per configuration (R, F, R+F) and judged negative: the judge's flag beside the truth's
    label (planted false negatives from qrels, or recorded RLHN verdicts). Precision, recall, F1
    and kappa per configuration and mining rank, also written as `judge_audit_<judge>.md/.png`
    under `$ARHN_HOME/reports/<dataset>/`."""
    settings = AuditConfig(**(config.model_dump() | {"rank_bucket_edges": tuple(config.rank_bucket_edges),
                                                     "recall_levels": tuple(config.recall_levels)}))
    dataset = validate_dataset_key(context.partition_key)
    paths = storage.paths
    beir = encoder = verdicts = None
    if settings.truth == "qrels":
        source = validate_dataset_key(settings.beir_dataset or dataset)
        beir = load_beir_dataset(source, paths.dataset_dirs(source), download=False)
        encoder = embedding_model.encoder(paths.embedding_cache_dir, resolve_instruction(source, settings.instruction))
    else:
        verdicts = Path(settings.verdicts_file)
        if not verdicts.is_absolute():
            verdicts = paths.data_dir / verdicts
        if not verdicts.is_file():
            raise FileNotFoundError(f"judge_audit: verdicts_file {settings.verdicts_file!r} not found (looked at {verdicts})")

    costs: dict[str, float] = {}

    def llm_stage(stage: str, frames: dict[str, pl.DataFrame], options: dict) -> tuple[pl.DataFrame, str]:
        options = {**options, "batch_size": language_model.batch_size}
        frame, stats, model = language_model.run_stage(context, paths, stage, frames, options)
        context.log.info(f"{stage}: {stats.calls} calls, {stats.cache_hits} from the cache")
        costs.update({f"{stage}_calls": stats.calls, f"{stage}_cache_hits": stats.cache_hits,
                      f"{stage}_generate_seconds": round(stats.generate_seconds, 1)})
        return frame, model

    started = time.perf_counter()
    result = run_audit(settings, dataset, beir, verdicts, encoder, llm_stage)
    wall_seconds = round(time.perf_counter() - started, 1)
    result.facts |= {"wall time": f"{wall_seconds} s", **{name.replace("_", " "): value for name, value in costs.items()}}
    for problem in result.problems:
        context.log.warning(f"skipped: {problem}")
    folder = paths.home / "reports" / dataset
    title = f"Judge audit: {dataset}, {settings.judge} judge vs {settings.truth}"
    markdown = audit_markdown(title, result.facts, result.metrics, result.by_rank)
    png = audit_chart(result.metrics, title, folder / f"judge_audit_{settings.judge}.png")
    report = folder / f"judge_audit_{settings.judge}.md"
    report.write_text(f"{markdown}\n\n![confusion matrices](judge_audit_{settings.judge}.png)\n", encoding="utf-8")
    # Per configuration: the flags' scores, and how well answer_probability alone orders the negatives.
    scores = {f"{row['config']}_{name}": round(value, 4) for row in result.metrics.to_dicts()
              for name, value in row.items() if isinstance(value, float)}
    return dg.Output(result.table, metadata={
        **scores,
        **costs,
        "wall_seconds": wall_seconds,
        "report": dg.MetadataValue.md(markdown + "\n\n" + image_markdown(png)),
        "report_path": dg.MetadataValue.path(str(report)),
        "skipped_records": len(result.problems),
        "preview": markdown_preview(result.table),
    })
