"""`beir_scores` and `beir_query_scores`: every trained model, and the base model, on BEIR."""

import time

import dagster as dg
import polars as pl

from arhn_assets.core.beir_io import DatasetNotFound, load_beir_dataset
from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.evaluation import EvaluationConfig, evaluate
from arhn_assets.core.paths import validate_dataset_key
from arhn_assets.core.training import TrainingConfig
from arhn_assets.dagster_config import config_from_dataclass
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage
from arhn_assets.metadata import markdown_preview

EvaluationRunConfig = config_from_dataclass(
    "EvaluationRunConfig", EvaluationConfig, "Exact cosine retrieval scored with pytrec_eval.",
    split=(str, "test"),
    # Further BEIR datasets (folders under ARHN_DATA_DIR) to score every model on, zero-shot.
    eval_datasets=(list[str], []),
)
KEYS = ["dataset", "config", "model_path", "eval_dataset", "split"]


@dg.multi_asset(
    partitions_def=dataset_partitions,
    group_name="retrieval",
    outs={
        "beir_scores": dg.AssetOut(kinds={"beir", "polars", "parquet"}, description="Mean metric per model and evaluation dataset.", automation_condition=dg.AutomationCondition.eager()),
        "beir_query_scores": dg.AssetOut(kinds={"beir", "polars", "parquet"}, description="Per-query metrics, for paired tests.", automation_condition=dg.AutomationCondition.eager()),
    },
)
def beir_scores(context: dg.AssetExecutionContext, config: EvaluationRunConfig, storage: ArhnStorage, trained_retriever: pl.DataFrame):
    """nDCG@10, Recall@100, MAP@100 and MRR@10 of the base model (config `base`) and of each
    configuration's model, on the dataset's own split and on every `eval_datasets` entry."""
    dataset = validate_dataset_key(context.partition_key)
    settings = EvaluationConfig(**{k: v for k, v in config.model_dump().items() if k not in ("split", "eval_datasets")})
    base_path = trained_retriever["base_model_path"][0] if trained_retriever.height else TrainingConfig().base_model_path
    models = [("base", base_path)]
    models += trained_retriever.select("config", "model_path").rows()
    frames, skipped, timings = [], [], []
    for eval_name in dict.fromkeys([dataset, *config.eval_datasets]):
        try:
            beir = load_beir_dataset(validate_dataset_key(eval_name), storage.paths.dataset_dirs(eval_name), download=False)
            beir.qrels(config.split)
        except DatasetNotFound as missing:
            if eval_name != dataset:
                raise
            # Triplets landed without a BEIR folder: nothing of its own to score on.
            skipped.append(f"{eval_name}: {missing}".splitlines()[0])
            context.log.warning(f"not scoring on {eval_name}: no BEIR folder with qrels/{config.split}.tsv")
            continue
        for name, path in models:
            encoder = Encoder(EncoderSpec(model=path), storage.paths.embedding_cache_dir)
            began = time.perf_counter()
            per_query = evaluate(encoder, beir, config.split, settings)
            encoded = encoder.stats["document"]
            timings.append((eval_name, name, round(time.perf_counter() - began, 1), encoded.encoded, round(encoded.texts_per_second, 1)))
            context.log.info(f"{name} on {eval_name}/{config.split}: {per_query['query_id'].n_unique()} queries")
            frames.append(per_query.with_columns(
                dataset=pl.lit(dataset), config=pl.lit(name), model_path=pl.lit(path), eval_dataset=pl.lit(eval_name), split=pl.lit(config.split)
            ).select(*KEYS, "query_id", "metric", "value"))
    if not frames:
        raise DatasetNotFound(
            f"nothing to score the models of {dataset} on: it has no BEIR folder with qrels/{config.split}.tsv "
            "(its triplets were landed); set eval_datasets, e.g. ['scifact'], to score them zero-shot"
        )
    query_scores = pl.concat(frames)
    scores = query_scores.group_by(*KEYS, "metric", maintain_order=True).agg(value=pl.col("value").mean())
    table = scores.pivot(on="metric", index=["eval_dataset", "config"], values="value")
    yield dg.Output(scores, output_name="beir_scores", metadata={
        "scores": markdown_preview(table, rows=50), "skipped": skipped,
        "timings": markdown_preview(pl.DataFrame(timings, schema=["eval_dataset", "config", "seconds", "passages_encoded", "passages_per_second"], orient="row"), rows=50),
    })
    yield dg.Output(query_scores, output_name="beir_query_scores", metadata={"queries": query_scores["query_id"].n_unique()})
