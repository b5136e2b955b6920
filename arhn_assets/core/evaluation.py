"""Stage 5b, evaluation: score retrievers on a BEIR split with pytrec_eval, per query and overall.

Retrieval is exact cosine search over the whole corpus (embeddings from `embeddings.Encoder`, so
a corpus is encoded once per model and cached), streamed over the cache's shards in chunks.
Metrics are pytrec_eval's, as beir computes them: nDCG@10 (`ndcg_cut_10`), Recall@100
(`recall_100`), MAP@100 (`map_cut_100`), and MRR@10, which trec_eval has no cut for, so it is
`recip_rank` over each query's top 10, as beir's `mrr` does.
Per-query values are kept so configurations can be compared with paired tests (`paired_tests`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from arhn_assets.core.beir_io import BeirDataset, passage_text
from arhn_assets.core.embeddings import Encoder, weights_fingerprint
from arhn_assets.core.search import exact_search

METRICS = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "map@100": "map_cut_100", "mrr@10": "recip_rank"}
QUERY_SCORES_SCHEMA = {"query_id": pl.String, "metric": pl.String, "value": pl.Float64}
# Which model scored on what: the keys of the beir_scores and beir_query_scores tables.
SCORE_KEYS = {
    "dataset": pl.String,
    "config": pl.String,
    "model_path": pl.String,
    "eval_dataset": pl.String,
    "split": pl.String,
}
BEIR_SCORES_SCHEMA = {**SCORE_KEYS, "metric": pl.String, "value": pl.Float64}
BEIR_QUERY_SCORES_SCHEMA = {**SCORE_KEYS, **QUERY_SCORES_SCHEMA}


@dataclass(frozen=True)
class EvaluationConfig:
    split: str = "test"
    # Further BEIR datasets (folders under ARHN_DATA_DIR) to score every model on, zero-shot.
    eval_datasets: tuple[str, ...] = ()
    top_k: int = 100
    # Drop a retrieved passage whose id equals the query's id (ArguAna-style corpora, where each
    # query is itself a corpus document). Off by default, as in MTEB.
    ignore_identical_ids: bool = False
    query_chunk_size: int = 1024
    # Passages scored per step of the exact search, read from the embedding cache: peak memory is
    # about query_chunk_size x corpus_chunk_size x 12 bytes plus the top-k, not the corpus.
    corpus_chunk_size: int = field(default=8192, metadata={"doc": "passages scored per step of the exact search"})


def retrieve(
    encoder: Encoder, dataset: BeirDataset, query_ids: list[str], config: EvaluationConfig
) -> dict[str, dict[str, float]]:
    """{query_id: {doc_id: cosine score}} for the top_k passages of each query.

    The corpus is searched exactly in one pass over the embedding cache's shards,
    `corpus_chunk_size` passages at a time (`core/search.py`), so it is never loaded whole."""
    corpus = dataset.corpus
    doc_emb = encoder.embeddings(
        [passage_text(t, x) for t, x in corpus.select("title", "text").iter_rows()], "document"
    )
    query_text = dict(dataset.queries.select("query_id", "text").iter_rows())
    query_emb = encoder.encode([query_text[q] for q in query_ids], "query")
    k = min(config.top_k + (1 if config.ignore_identical_ids else 0), corpus.height)
    hits = exact_search(query_emb, doc_emb, k, config.corpus_chunk_size, config.query_chunk_size)
    doc_ids = corpus["doc_id"].gather(hits.indices.flatten().numpy()).to_list()
    scores = hits.scores.flatten().tolist()
    run: dict[str, dict[str, float]] = {}
    for row, query_id in enumerate(query_ids):
        hits_of_query = dict(zip(doc_ids[row * k : (row + 1) * k], scores[row * k : (row + 1) * k], strict=True))
        if config.ignore_identical_ids:
            hits_of_query.pop(query_id, None)
        run[query_id] = dict(list(hits_of_query.items())[: config.top_k])
    return run


def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> pl.DataFrame:
    """Per-query metrics (`QUERY_SCORES_SCHEMA`) of `run` against `qrels`, by pytrec_eval."""
    import pytrec_eval

    judged = {q: docs for q, docs in run.items() if q in qrels}
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100"}).evaluate(judged)
    top10 = {q: dict(sorted(docs.items(), key=lambda item: -item[1])[:10]) for q, docs in judged.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    rows = []
    for query_id in sorted(judged):
        for name, measure in METRICS.items():
            source = mrr if measure == "recip_rank" else main
            rows.append((query_id, name, float(source[query_id][measure])))
    return pl.DataFrame(rows, schema=QUERY_SCORES_SCHEMA, orient="row")


def qrels_dict(qrels: pl.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for query_id, doc_id, score in qrels.select("query_id", "doc_id", "score").iter_rows():
        out.setdefault(query_id, {})[doc_id] = int(score)
    return out


def evaluate(encoder: Encoder, dataset: BeirDataset, config: EvaluationConfig = EvaluationConfig()) -> pl.DataFrame:
    """Per-query metrics of `encoder` on `config.split` of `dataset` (queries without judgments are skipped)."""
    qrels = qrels_dict(dataset.qrels(config.split))
    known = set(dataset.queries["query_id"].to_list())
    query_ids = sorted(q for q in qrels if q in known)
    return score_run(qrels, retrieve(encoder, dataset, query_ids, config))


def mean_scores(per_query: pl.DataFrame) -> dict[str, float]:
    """The mean of each metric over queries: BEIR's reported figure."""
    return dict(per_query.group_by("metric").agg(pl.col("value").mean()).iter_rows())


def paired_tests(per_query: pl.DataFrame, reference: str, by: str = "config") -> pl.DataFrame:
    """Each `by` group against `reference`, per metric, over the same queries: mean delta, the
    paired t-test's and the Wilcoxon signed-rank test's two-sided p-values (scipy)."""
    from scipy import stats

    rows = []
    base = per_query.filter(pl.col(by) == reference)
    for (other, metric), group in per_query.filter(pl.col(by) != reference).group_by(by, "metric", maintain_order=True):
        pairs = group.join(base.filter(pl.col("metric") == metric), on=["query_id", "metric"], suffix="_reference")
        delta = (pairs["value"] - pairs["value_reference"]).to_numpy()
        t_p = float(stats.ttest_rel(pairs["value"], pairs["value_reference"]).pvalue) if np.any(delta) else 1.0
        w_p = float(stats.wilcoxon(delta).pvalue) if np.any(delta) else 1.0
        rows.append((other, metric, len(delta), float(delta.mean()) if len(delta) else 0.0, t_p, w_p))
    return pl.DataFrame(
        rows,
        schema={
            by: pl.String,
            "metric": pl.String,
            "queries": pl.Int64,
            "delta": pl.Float64,
            "p_ttest": pl.Float64,
            "p_wilcoxon": pl.Float64,
        },
        orient="row",
    )


TIMINGS_SCHEMA = {
    "eval_dataset": pl.String,
    "config": pl.String,
    "seconds": pl.Float64,
    "passages_encoded": pl.Int64,
    "passages_per_second": pl.Float64,
    "query_prompt": pl.String,
}


def evaluate_models(
    models: list[tuple[str, str]],
    encoder_for: Callable[[str], Encoder],
    dataset: str,
    eval_name: str,
    beir: BeirDataset,
    config: EvaluationConfig,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-query scores (`BEIR_QUERY_SCORES_SCHEMA`) of each (config name, model path) on `beir`,
    each model encoded by `encoder_for(path)`, and their timings (`TIMINGS_SCHEMA`). Models with
    the same weights (two configurations that kept the same training data) are scored once: the
    second gets the first's scores and a timing of 0 s, 0 passages encoded."""
    frames, timings = [], []
    scored: dict[str, tuple[pl.DataFrame, tuple]] = {}  # weights fingerprint -> scores, timing
    for name, path in models:
        identity = weights_fingerprint(path)
        if identity in scored:
            per_query, (_, _, _, prompt) = scored[identity]
            timing = (0.0, 0, 0.0, prompt)
        else:
            encoder = encoder_for(path)
            began = time.perf_counter()
            per_query = evaluate(encoder, beir, config)
            encoded = encoder.stats["document"]
            timing = (
                round(time.perf_counter() - began, 1),
                encoded.encoded,
                round(encoded.texts_per_second, 1),
                encoder.spec.query_prompt,
            )
            scored[identity] = (per_query, timing)
        timings.append((eval_name, name, *timing))
        keys = {
            "dataset": dataset,
            "config": name,
            "model_path": path,
            "eval_dataset": eval_name,
            "split": config.split,
        }
        frames.append(
            per_query.with_columns(**{k: pl.lit(v) for k, v in keys.items()}).select(BEIR_QUERY_SCORES_SCHEMA.keys())
        )
    return pl.concat(frames), pl.DataFrame(timings, schema=TIMINGS_SCHEMA, orient="row")


def mean_per_model(query_scores: pl.DataFrame) -> pl.DataFrame:
    """`beir_scores`: each model's mean of each metric over the queries (BEIR's reported figure)."""
    return query_scores.group_by(*SCORE_KEYS, "metric", maintain_order=True).agg(value=pl.col("value").mean())
