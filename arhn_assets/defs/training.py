"""`trained_retriever`: one fine-tuned model per refinement configuration of a dataset."""

import dagster as dg
import polars as pl

from arhn_assets.core.embeddings import model_fingerprint
from arhn_assets.core.paths import validate_dataset_key
from arhn_assets.core.training import TRAINED_SCHEMA, TrainingConfig, teacher_scores, train_retriever, training_rows
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage
from arhn_assets.execution import GPU_POOL, gpu_op_tags
from arhn_assets.metadata import markdown_preview

TrainingRunConfig = run_config(
    TrainingConfig, "sentence-transformers fine-tuning of every configuration's refined triplets."
)


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="retrieval",
    kinds={"sentence-transformers", "polars", "parquet"},
    pool=GPU_POOL,
    op_tags=gpu_op_tags(),
    # Retrain once refined triplets (or any input) change: the landing sensor's refinement run
    # is followed through here to evaluation and the report (defs/automation.py).
    automation_condition=dg.AutomationCondition.eager(),
)
def trained_retriever(
    context: dg.AssetExecutionContext,
    config: TrainingRunConfig,
    storage: ArhnStorage,
    refined_triplets: pl.DataFrame,
    raw_triplets: pl.DataFrame,
    raw_passages: pl.DataFrame,
    mined_negatives: pl.DataFrame,
    answerability_rankings: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Per configuration: the model folder under `$ARHN_HOME/models/<dataset>/<config>/` (with a
    model card and `arhn_training.json`), its fingerprints and training figures."""
    settings = config.settings(TrainingConfig)
    dataset = validate_dataset_key(context.partition_key)
    teacher = (
        teacher_scores(settings.teacher, mined_negatives, answerability_rankings)
        if settings.loss == "distill_kl"
        else None
    )
    out = []
    for (name,), refined in refined_triplets.group_by("config", maintain_order=True):
        rows, pairs = training_rows(refined, raw_triplets, raw_passages, settings.negatives_per_row, teacher)
        folder = storage.paths.home / "models" / dataset / name.replace("+", "_plus_")
        description = {"name": f"arhn {dataset} {name}", "dataset": dataset, "config": name}
        result = train_retriever(rows, pairs, settings, folder, description, log=context.log.info)
        context.log.info(
            f"{name}: {result.steps} steps in {result.train_seconds:.1f} s{' (reused)' if result.reused else ''}"
        )
        out.append(
            (
                dataset,
                name,
                result.model_path,
                settings.base_model_path,
                result.base_model,
                model_fingerprint(result.model_path),
                result.data_fingerprint,
                settings.loss,
                result.train_rows,
                result.queries,
                result.steps,
                round(result.train_seconds, 2),
                round(result.steps_per_second, 3),
                result.train_loss,
                result.reused,
            )
        )
    frame = pl.DataFrame(out, schema=TRAINED_SCHEMA, orient="row")
    return dg.Output(frame, metadata={"models": frame.height, "preview": markdown_preview(frame.drop("model_path"))})
