"""`beir_scores` and `beir_query_scores`: every trained model, and the base model, on BEIR."""

from functools import partial

import dagster as dg
import polars as pl

from arhn_assets.core.beir_io import BeirDataset, DatasetNotFound, load_beir_dataset
from arhn_assets.core.evaluation import EvaluationConfig, evaluate_models, mean_per_model
from arhn_assets.core.instructions import resolve_instruction
from arhn_assets.core.paths import validate_dataset_key
from arhn_assets.core.training import TrainingConfig
from arhn_assets.dagster_config import run_config
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage, EmbeddingModel
from arhn_assets.metadata import markdown_preview

EvaluationRunConfig = run_config(EvaluationConfig, "Exact cosine retrieval scored with pytrec_eval.")


@dg.multi_asset(
    partitions_def=dataset_partitions,
    group_name="retrieval",
    outs={
        "beir_scores": dg.AssetOut(
            kinds={"beir", "polars", "parquet"},
            description="Mean metric per model and evaluation dataset.",
            automation_condition=dg.AutomationCondition.eager(),
        ),
        "beir_query_scores": dg.AssetOut(
            kinds={"beir", "polars", "parquet"},
            description="Per-query metrics, for paired tests.",
            automation_condition=dg.AutomationCondition.eager(),
        ),
    },
)
def beir_scores(
    context: dg.AssetExecutionContext,
    config: EvaluationRunConfig,
    storage: ArhnStorage,
    embedding_model: EmbeddingModel,
    trained_retriever: pl.DataFrame,
    raw_triplets: pl.DataFrame,
):
    """nDCG@10, Recall@100, MAP@100 and MRR@10 of the base model (config `base`) and of each
    configuration's model, on the dataset's own split and on every `eval_datasets` entry. Every
    model encodes with the `embedding_model` settings (prompts, precision, device, batch size),
    the query prompt's `{instruction}` filled with the evaluated dataset's instruction."""
    dataset = validate_dataset_key(context.partition_key)
    settings = config.settings(EvaluationConfig)
    own_instruction = raw_triplets["instruction"].drop_nulls().first() or ""
    base = trained_retriever["base_model_path"][0] if trained_retriever.height else TrainingConfig().base_model_path
    models = [("base", base), *trained_retriever.select("config", "model_path").rows()]
    frames, timings, skipped = [], [], []
    for eval_name in dict.fromkeys([dataset, *settings.eval_datasets]):
        beir = _scorable(storage, eval_name, dataset, settings.split)
        if beir is None:  # triplets landed without a BEIR folder: nothing of its own to score on
            skipped.append(eval_name)
            context.log.warning(f"not scoring on {eval_name}: no BEIR folder with qrels/{settings.split}.tsv")
            continue
        instruction = own_instruction if eval_name == dataset else resolve_instruction(eval_name, None)
        encoder_for = partial(
            embedding_model.encoder,
            storage.paths.embedding_cache_dir,
            instruction,
            log=context.log.info,
            context=context,
        )
        per_query, timing = evaluate_models(
            models, lambda path, make=encoder_for: make(model=path), dataset, eval_name, beir, settings
        )
        frames.append(per_query)
        timings.append(timing)
        context.log.info(
            f"{len(models)} models on {eval_name}/{settings.split}: {per_query['query_id'].n_unique()} queries"
        )
    if not frames:
        raise DatasetNotFound(
            f"nothing to score the models of {dataset} on: it has no BEIR folder with qrels/{settings.split}.tsv "
            "(its triplets were landed); set eval_datasets, e.g. ['scifact'], to score them zero-shot"
        )
    query_scores = pl.concat(frames)
    scores = mean_per_model(query_scores)
    table = scores.pivot(on="metric", index=["eval_dataset", "config"], values="value")
    metadata = {
        "scores": markdown_preview(table, rows=50),
        "skipped": skipped,
        "timings": markdown_preview(pl.concat(timings), rows=50),
    }
    yield dg.Output(scores, output_name="beir_scores", metadata=metadata)
    yield dg.Output(
        query_scores, output_name="beir_query_scores", metadata={"queries": query_scores["query_id"].n_unique()}
    )


def _scorable(storage: ArhnStorage, eval_name: str, dataset: str, split: str) -> BeirDataset | None:
    """The BEIR folder to score on, or None when the dataset's own folder is missing (another
    named dataset must exist)."""
    try:
        beir = load_beir_dataset(validate_dataset_key(eval_name), storage.paths.dataset_dirs(eval_name), download=False)
        beir.qrels(split)
    except DatasetNotFound:
        if eval_name != dataset:
            raise
        return None
    return beir
