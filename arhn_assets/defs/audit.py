"""`judge_audit` and `judge_audit_scores`: the relabeling judge scored against known false
negatives, before GPU hours go into relabeling a large collection (core/audit/). Not part of
the main job: run it on its own (`judge_audit_job`, `make audit`)."""

import time
from pathlib import Path

import dagster as dg
import polars as pl

from arhn_assets.core.audit import AuditConfig, LLMStage, audit_chart, audit_markdown, run_audit
from arhn_assets.core.audit.report import overall
from arhn_assets.core.beir_io import load_beir_dataset
from arhn_assets.core.contracts import CONTRACTS
from arhn_assets.core.instructions import resolve_instruction
from arhn_assets.core.paths import ArhnPaths, validate_dataset_key
from arhn_assets.core.report import image_markdown
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage, EmbeddingModel, LanguageModel, QuerySampleResource
from arhn_assets.execution import GPU_POOL, gpu_op_tags
from arhn_assets.metadata import markdown_preview

AUDIT_GROUP = "audit"
JudgeAuditConfig = run_config(AuditConfig, "Which judge to audit against which truth (core.audit.AuditConfig).")


def verdicts_path(settings: AuditConfig, paths: ArhnPaths) -> Path:
    """The RLHN judgment file, a relative path looked up under ARHN_DATA_DIR."""
    path = Path(settings.verdicts_file)
    path = path if path.is_absolute() else paths.data_dir / path
    if not path.is_file():
        raise FileNotFoundError(f"judge_audit: verdicts_file {settings.verdicts_file!r} not found (looked at {path})")
    return path


def write_report(
    paths: ArhnPaths, dataset: str, settings: AuditConfig, facts: dict, scores: pl.DataFrame
) -> tuple[str, Path, bytes]:
    """`judge_audit_<judge>.md/.png` under `$ARHN_HOME/reports/<dataset>/`."""
    folder = paths.home / "reports" / dataset
    title = f"Judge audit: {dataset}, {settings.judge} judge vs {settings.truth}"
    markdown = audit_markdown(title, facts, scores)
    png = audit_chart(scores, title, folder / f"judge_audit_{settings.judge}.png")
    report = folder / f"judge_audit_{settings.judge}.md"
    report.write_text(f"{markdown}\n\n![confusion matrices](judge_audit_{settings.judge}.png)\n", encoding="utf-8")
    return markdown, report, png


def _llm_stage(
    context: dg.AssetExecutionContext, language_model: LanguageModel, paths: ArhnPaths, costs: dict
) -> LLMStage:
    """The configured LLM as the audit's judge, recording each stage's calls, hits and seconds in `costs`."""

    def run(stage: str, frames: dict[str, pl.DataFrame], options: dict) -> tuple[pl.DataFrame, str]:
        frame, stats, model = language_model.run_stage(context, paths, stage, frames, options)
        context.log.info(f"{stage}: {stats.calls} calls, {stats.cache_hits} from the cache")
        costs.update(
            {
                f"{stage}_calls": stats.calls,
                f"{stage}_cache_hits": stats.cache_hits,
                f"{stage}_generate_seconds": round(stats.generate_seconds, 1),
            }
        )
        return frame, model

    return run


@dg.multi_asset(
    outs={
        name: dg.AssetOut(description=CONTRACTS[name].description, kinds={"polars", "parquet"}, group_name=AUDIT_GROUP)
        for name in ("judge_audit", "judge_audit_scores")
    },
    partitions_def=dataset_partitions,
    pool=GPU_POOL,
    op_tags=gpu_op_tags(),
    can_subset=False,
)
def judge_audit(
    context: dg.AssetExecutionContext,
    config: JudgeAuditConfig,
    storage: ArhnStorage,
    embedding_model: EmbeddingModel,
    language_model: LanguageModel,
    query_sample: QuerySampleResource,
):
    """Per configuration (R, F, R+F) and judged negative: the judge's flag beside the truth's
    label (planted false negatives from qrels, or recorded RLHN verdicts); and the scores:
    precision, recall, F1 and kappa per configuration and mining rank, and how well the judge's
    answer_probability alone ranks the negatives, also written as a report."""
    settings = config.settings(AuditConfig)
    dataset, paths = validate_dataset_key(context.partition_key), storage.paths
    beir = encoder = verdicts = None
    if settings.truth == "qrels":
        source = validate_dataset_key(settings.beir_dataset or dataset)
        beir = load_beir_dataset(source, paths.dataset_dirs(source), download=False)
        encoder = embedding_model.encoder(
            paths.embedding_cache_dir,
            resolve_instruction(source, settings.instruction),
            log=context.log.info,
            context=context,
        )
    else:
        verdicts = verdicts_path(settings, paths)
    costs: dict[str, float] = {}
    llm_stage = _llm_stage(context, language_model, paths, costs)
    started = time.perf_counter()
    result = run_audit(settings, dataset, beir, verdicts, encoder, llm_stage, query_sample.sample)
    wall_seconds = round(time.perf_counter() - started, 1)
    for problem in result.problems:
        context.log.warning(f"skipped: {problem}")
    facts = result.facts | {
        "query sample": query_sample.sample.describe(),
        "wall time": f"{wall_seconds} s",
        **{name.replace("_", " "): value for name, value in costs.items()},
    }
    markdown, report, png = write_report(paths, dataset, settings, facts, result.scores)
    # Per configuration: the flags' scores, and how well answer_probability alone orders the negatives.
    scores = {
        f"{row['config']}_{name}": round(value, 4)
        for row in overall(result.scores).to_dicts()
        for name, value in row.items()
        if isinstance(value, float)
    }
    yield dg.Output(
        result.table,
        output_name="judge_audit",
        metadata={
            **scores,
            **costs,
            "wall_seconds": wall_seconds,
            "skipped_records": len(result.problems),
            "report": dg.MetadataValue.md(markdown + "\n\n" + image_markdown(png)),
            "report_path": dg.MetadataValue.path(str(report)),
            "preview": markdown_preview(result.table),
        },
    )
    yield dg.Output(
        result.scores, output_name="judge_audit_scores", metadata={"preview": markdown_preview(result.scores, rows=30)}
    )
