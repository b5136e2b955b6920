"""Metrics against hand-computed values, paired tests, and the base model's published SciFact
figure (MTEB: all-MiniLM-L6-v2 nDCG@10 = 0.6451)."""

from __future__ import annotations

import json
import math

import dagster as dg
import polars as pl
import pytest

from arhn_assets.cli import pipeline_job
from arhn_assets.core.beir_io import load_beir_dataset
from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.evaluation import evaluate, mean_scores, paired_tests, score_run
from arhn_assets.core.ingest import TRIPLETS_SCHEMA
from arhn_assets.core.lake import write_partition
from arhn_assets.core.training import TRAINED_SCHEMA
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.toy_data import QUERIES, make_passages, make_triplets


def test_metrics_reproduce_hand_computed_values():
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d5": 2}}
    run = {"q1": {"d3": 0.9, "d1": 0.8, "d4": 0.7, "d2": 0.6}, "q2": {"d5": 0.5, "d6": 0.4}, "unjudged": {"d1": 1.0}}
    scores = {(q, m): v for q, m, v in score_run(qrels, run).iter_rows()}
    ideal = 1 + 1 / math.log2(3)
    assert scores[("q1", "ndcg@10")] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert scores[("q1", "mrr@10")] == pytest.approx(0.5)
    assert scores[("q1", "map@100")] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert scores[("q1", "recall@100")] == pytest.approx(1.0)
    assert scores[("q2", "ndcg@10")] == pytest.approx(1.0) and scores[("q2", "mrr@10")] == pytest.approx(1.0)
    assert "unjudged" not in {q for q, _ in scores}


def test_mrr_is_cut_at_ten():
    run = {"q": {f"d{i}": 1.0 - i / 100 for i in range(12)}}
    scores = dict(
        score_run({"q": {"d11": 1}}, run).filter(pl.col("metric") == "mrr@10").select("metric", "value").iter_rows()
    )
    assert scores["mrr@10"] == 0.0


def test_paired_tests_find_a_consistent_gain_and_no_change():
    rows = [
        (c, f"q{i}", "ndcg@10", v)
        for i in range(20)
        for c, v in (("baseline", 0.5 + i / 100), ("R", 0.6 + i / 100 + (i % 3) / 1000), ("F", 0.5 + i / 100))
    ]
    frame = pl.DataFrame(rows, schema=["config", "query_id", "metric", "value"], orient="row")
    tests = {c: (d, p) for c, _, _, d, p, _ in paired_tests(frame, "baseline").iter_rows()}
    assert tests["R"][0] == pytest.approx(0.101, abs=1e-3) and tests["R"][1] < 1e-6
    assert tests["F"] == (0.0, 1.0)


@pytest.mark.slow
@pytest.mark.all_cores
def test_base_model_reproduces_its_published_scifact_ndcg(shared_data, embedding_cache):
    scifact = load_beir_dataset("scifact", [shared_data / "scifact"], download=False)
    per_query = evaluate(Encoder(EncoderSpec(), embedding_cache), scifact)
    assert per_query["query_id"].n_unique() == 300
    assert mean_scores(per_query)["ndcg@10"] == pytest.approx(0.6451, abs=0.002)


def write_toy_beir(folder) -> None:
    """A BEIR folder of the hand-made corpus: three test queries, one relevant passage each."""
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
    passages = make_passages()
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, t, x in passages.iter_rows())
    )
    queries = [q for q in QUERIES if len(q[2]) == 1][:3]
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": text}) + "\n" for q, text, _ in queries)
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{docs[0]}\t1\n" for q, _, docs in queries)
    )


@pytest.mark.slow
def test_evaluation_encodes_queries_with_the_configured_prompt_and_instruction(tmp_path, monkeypatch):
    """beir_scores scores every model with the embedding_model settings: a query prompt with an
    {instruction} slot reaches evaluation filled with the dataset's instruction, and the scores
    are those of that prompt (a direct evaluation with the same prompt), not of the bare query."""
    home, data = tmp_path / "home", tmp_path / "data"
    write_toy_beir(data / "toy")
    monkeypatch.setenv("ARHN_HOME", str(home))
    monkeypatch.setenv("ARHN_DATA_DIR", str(data))
    lake = home / "lake"
    write_partition(pl.DataFrame(schema=TRAINED_SCHEMA), lake / "trained_retriever" / "dataset=toy")
    triplets = make_triplets().with_columns(
        instruction=pl.lit("Retrieve passages about volcanoes, lava and eruptions.")
    )
    write_partition(
        triplets.with_columns(**{c: pl.lit(None) for c in TRIPLETS_SCHEMA if c not in triplets.columns})
        .select(TRIPLETS_SCHEMA.keys())
        .cast(TRIPLETS_SCHEMA),
        lake / "raw_triplets" / "dataset=toy",
    )
    prompt = "Instruct: {instruction}\nQuery: "
    config = {"resources": {"embedding_model": {"config": {"query_prompt": prompt}}}}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["toy"])
        job = pipeline_job(defs(), "key:beir_scores")
        result = job.execute_in_process(partition_key="toy", instance=instance, run_config=config)
    timings = result.asset_materializations_for_node("beir_scores")[0].metadata["timings"].value
    assert "Instruct: Retrieve passages about volcanoes, lava and eruptions." in timings
    got = pl.read_parquet(lake / "beir_query_scores" / "dataset=toy" / "part-0.parquet").select(
        "query_id", "metric", "value"
    )
    beir = load_beir_dataset("toy", [data / "toy"], download=False)
    cache = home / "cache" / "embeddings"
    filled = Encoder(
        EncoderSpec(query_prompt="Instruct: Retrieve passages about volcanoes, lava and eruptions.\nQuery: "), cache
    )
    bare = Encoder(EncoderSpec(), cache)
    # the asset encoded the queries under the filled prompt's cache key, never under the bare one
    assert (cache / filled.cache_key("query")[0]).is_dir() and not (cache / bare.cache_key("query")[0]).exists()
    assert got.sort("query_id", "metric").equals(evaluate(filled, beir).sort("query_id", "metric"))


@pytest.mark.slow
def test_two_configurations_with_the_same_weights_are_encoded_and_scored_once(tmp_path, embedding_cache):
    """A judge that flags nothing leaves R+F's training data equal to baseline's: the two models
    differ only in their card and training record, so evaluation encodes the corpus once."""
    import shutil

    from arhn_assets.core.embeddings import default_model_path, model_fingerprint, weights_fingerprint
    from arhn_assets.core.evaluation import EvaluationConfig, evaluate_models

    write_toy_beir(tmp_path / "toy")
    beir = load_beir_dataset("toy", [tmp_path / "toy"], download=False)
    folders = {}
    for name in ("baseline", "R_plus_F"):
        folders[name] = tmp_path / "models" / name
        shutil.copytree(default_model_path(), folders[name])
        (folders[name] / "README.md").write_text(f"# arhn toy {name}\n")
        (folders[name] / "arhn_training.json").write_text(json.dumps({"config": name}))
    assert model_fingerprint(str(folders["baseline"])) != model_fingerprint(str(folders["R_plus_F"]))
    assert weights_fingerprint(str(folders["baseline"])) == weights_fingerprint(str(folders["R_plus_F"]))

    encoded_paths = []

    def encoder_for(path: str) -> Encoder:
        encoded_paths.append(path)
        return Encoder(EncoderSpec(model=path), embedding_cache)

    models = [("baseline", str(folders["baseline"])), ("R+F", str(folders["R_plus_F"]))]
    per_query, timings = evaluate_models(models, encoder_for, "toy", "toy", beir, EvaluationConfig())
    assert encoded_paths == [str(folders["baseline"])]
    by_config = {c: f.sort("query_id", "metric")["value"] for (c,), f in per_query.group_by("config")}
    assert by_config["baseline"].equals(by_config["R+F"]) and per_query["query_id"].n_unique() == 3
    assert timings.filter(pl.col("config") == "R+F")["passages_encoded"].to_list() == [0]
    # a model whose weights differ is scored on its own
    with open(folders["R_plus_F"] / "model.safetensors", "r+b") as weights:
        weights.seek(-4, 2)
        weights.write(b"\x00\x00\x80\x3f")  # the last float becomes 1.0
    evaluate_models(models, encoder_for, "toy", "toy", beir, EvaluationConfig())
    assert encoded_paths[1:] == [str(folders["baseline"]), str(folders["R_plus_F"])]
