"""The memory-bounded search (`core/search.py`) and the memory-mapped embedding cache behind it:
streaming over chunks gives the in-memory search's result to the bit (ids, scores, order, ranks),
on SciFact-sized random vectors and on the toy corpus with the real all-MiniLM-L6-v2; the cache's
shards survive a reopen; FAISS IVF, IVF-PQ and HNSW find the neighbours, and the exact re-rank
turns them into exact search's answer wherever the exact top-k is among the candidates."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch

from arhn_assets.core.embedding_store import EmbeddingStore, EmbeddingView
from arhn_assets.core.embeddings import DEFAULT_CHUNK_SIZE, Encoder, EncoderSpec
from arhn_assets.core.mining import MiningConfig, mine_negatives
from arhn_assets.core.search import exact_search, faiss_search
from arhn_assets_tests.helpers.toy_data import make_passages, make_triplets

DIM = 384
SCIFACT_PASSAGES, SCIFACT_QUERIES = 5183, 809


def unit_rows(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def scifact_sized():
    """Random unit vectors the size of SciFact, with exact duplicates (so ties), queries, and 0-3
    tracked passages per query."""
    rng = np.random.default_rng(0)
    corpus = unit_rows(rng, SCIFACT_PASSAGES)
    corpus[100:140] = corpus[5000]  # 41 equal rows: ties across chunk boundaries
    corpus[3000:3010] = corpus[7]
    queries = unit_rows(rng, SCIFACT_QUERIES)
    queries[:20] = corpus[5000] + 0.01 * queries[:20]  # queries whose top-k is all ties
    tracked = [sorted(rng.choice(SCIFACT_PASSAGES, size=int(rng.integers(0, 4)), replace=False)) for _ in queries]
    return corpus, queries, tracked


def in_memory(corpus: np.ndarray, queries: np.ndarray, k: int, tracked: list[list[int]]):
    """The whole score matrix at once: top-k by score then row, scores and ranks of tracked rows."""
    scores = (torch.from_numpy(queries).double() @ torch.from_numpy(corpus).double().T).float()
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    tracked_scores = [scores[i, rows].numpy() for i, rows in enumerate(tracked)]
    ranks = [((scores[i][None, :] > scores[i, rows][:, None]).sum(1) + 1).numpy() for i, rows in enumerate(tracked)]
    return scores.gather(1, order), order, tracked_scores, ranks


def assert_same(hits, reference) -> None:
    scores, rows, tracked_scores, ranks = reference
    assert torch.equal(hits.indices, rows)
    assert torch.equal(hits.scores, scores)
    assert all(np.array_equal(a, b) for a, b in zip(hits.tracked_scores, tracked_scores, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(hits.tracked_ranks, ranks, strict=True))


@pytest.mark.parametrize(("chunk", "query_chunk"), [(7, 4096), (64, 100), (1000, 333), (8192, 4096)])
@pytest.mark.all_cores
def test_streamed_exact_search_equals_the_in_memory_search(scifact_sized, chunk, query_chunk):
    corpus, queries, tracked = scifact_sized
    k = 112  # SciFact's window with the default settings, plus a reserve
    hits = exact_search(queries, corpus, k, chunk, query_chunk, tracked)
    assert_same(hits, in_memory(corpus, queries, k, tracked))
    assert (hits.indices[:20, :41].sort(dim=1).values == torch.tensor([*range(100, 140), 5000])).all()


def test_one_passage_at_a_time_still_equals_the_in_memory_search(scifact_sized):
    corpus, queries, tracked = scifact_sized
    few = np.concatenate([queries[:12], queries[-12:]])
    few_tracked = tracked[:12] + tracked[-12:]
    assert_same(exact_search(few, corpus, 50, 1, 5, few_tracked), in_memory(corpus, few, 50, few_tracked))


def test_a_corpus_smaller_than_k_is_padded(scifact_sized):
    corpus, queries, _ = scifact_sized
    hits = exact_search(queries[:3], corpus[:5], 8, 2, 2)
    assert (hits.indices[:, 5:] == -1).all() and torch.isinf(hits.scores[:, 5:]).all()
    assert sorted(hits.indices[0, :5].tolist()) == list(range(5))


def fill_like_the_encoder(store: EmbeddingStore, hashes: list[str], vectors: np.ndarray, order: np.ndarray) -> None:
    """Shards of DEFAULT_CHUNK_SIZE rows in `order` (the encoder writes them longest text first)."""
    for start in range(0, len(order), DEFAULT_CHUNK_SIZE):
        part = order[start : start + DEFAULT_CHUNK_SIZE]
        store.add([hashes[i] for i in part], vectors[part])


def test_search_over_memory_mapped_shards_equals_the_in_memory_search(scifact_sized, tmp_path):
    corpus, queries, tracked = scifact_sized
    hashes = [f"{i:032x}" for i in range(len(corpus))]
    fill_like_the_encoder(
        EmbeddingStore(tmp_path, {}), hashes, corpus, np.random.default_rng(1).permutation(len(corpus))
    )
    store = EmbeddingStore(tmp_path, {})  # reopened: the index is rebuilt from the shards
    view = EmbeddingView(store, np.array([store.row(h) for h in hashes]))
    assert view.shape == corpus.shape and np.array_equal(view[[5, 0, 5182]], corpus[[5, 0, 5182]])
    assert_same(exact_search(queries, view, 112, 1000, 4096, tracked), in_memory(corpus, queries, 112, tracked))


def test_store_shards_survive_a_reopen_and_ignore_what_is_not_a_shard(tmp_path):
    rng = np.random.default_rng(2)
    first, second = unit_rows(rng, 5), unit_rows(rng, 3)
    store = EmbeddingStore(tmp_path, {"format": "test"})
    store.add(["a", "b", "c", "d", "e"], first)
    store.add(["f", "a", "g"], second)  # "a" again: the first shard's row stands
    (tmp_path / ".shard-9-x.vectors.npy.tmp").write_bytes(b"killed mid-write")
    np.save(tmp_path / "shard-99999999999999999999-orphan.vectors.npy", second)  # no hashes: not a shard
    pl.DataFrame({"text_hash": ["z"], "embedding": [[0.0] * DIM]}).write_parquet(tmp_path / "shard-1-old.parquet")

    again = EmbeddingStore(tmp_path, {"format": "other"})
    assert len(again) == 7 and "z" not in again
    assert np.array_equal(again.get(["g", "a", "e", "f"]), np.stack([second[2], first[0], first[4], second[0]]))
    assert json.loads((tmp_path / "spec.json").read_text()) == {"format": "test"}
    view = EmbeddingView(again, np.array([again.row(h) for h in "gfedcba"]))
    blocks = list(view.chunks(3))
    assert [offset for offset, _ in blocks] == [0, 3, 6]
    assert np.array_equal(np.concatenate([b for _, b in blocks]), again.get(list("gfedcba")))
    assert not isinstance(blocks[0][1], np.memmap)  # a copy: the mapping is gone once read
    with pytest.raises(ValueError, match="2 positions for a view of 7 rows"):
        view.expand([4, 0], 6)
    expanded = EmbeddingView(again, np.array([again.row(h) for h in "gf"])).expand([0, 4], 6)
    assert np.array_equal(expanded[[0, 1, 4]], np.stack([second[2], np.zeros(DIM), second[0]]))


def test_the_cache_format_is_in_the_key(tmp_path):
    encoder = Encoder(EncoderSpec(), tmp_path)
    name, description = encoder.cache_key("document")
    assert description["format"] == "npy-shards-1"


@pytest.fixture(scope="module")
def toy_encoder(tmp_path_factory) -> Encoder:
    return Encoder(EncoderSpec(), tmp_path_factory.mktemp("toy") / "embeddings")


TOY_CASES = {
    "default": MiningConfig(num_negatives=4),
    "reserve": MiningConfig(num_negatives=3, reserve_negatives=4, relative_margin=None),
    "random with window": MiningConfig(
        num_negatives=3, relative_margin=0.05, range_min=2, range_max=12, sampling_strategy="random"
    ),
}


@pytest.mark.parametrize("config", TOY_CASES.values(), ids=TOY_CASES.keys())
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_mining_the_toy_corpus_in_tiny_chunks_changes_nothing(toy_encoder, config, chunk):
    triplets, passages = make_triplets({"q_rise": ["bread-1", "vaccine-0"]}), make_passages()
    config = dataclasses.replace(config, mine_from_corpus="always", provided_negatives="filter")
    whole = mine_negatives(triplets, passages, toy_encoder, config).candidates
    chunked = mine_negatives(triplets, passages, toy_encoder, dataclasses.replace(config, corpus_chunk_size=chunk))
    assert chunked.candidates.equals(whole)
    assert whole.filter(pl.col("source") == "provided")["rank"].is_not_null().all()


def clustered(rng: np.random.Generator, count: int, centers: np.ndarray, noise: float) -> np.ndarray:
    rows = centers[rng.integers(0, len(centers), count)] + noise * rng.standard_normal((count, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clusters():
    """SciFact-sized vectors around 64 centres (embeddings cluster by topic; uniform random
    vectors in 384 dimensions have no neighbours for an index to find)."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((64, DIM))
    return clustered(rng, SCIFACT_PASSAGES, centers, 0.06), clustered(rng, 200, centers, 0.06)


def recall(rows: torch.Tensor, exact: torch.Tensor) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(rows, exact, strict=True)]))


@pytest.mark.parametrize(
    ("factory", "options", "floor"),
    [
        ("IVF64,Flat", {"nprobe": 8}, 0.9),
        # PQ's codes cannot tell apart neighbours that are all nearly equidistant (noise around a
        # centre), which is why faiss_rerank exists. 4-bit codes train 13x faster than PQ32's
        # 8-bit ones (3 s against 37 s a search here) through the same faiss code path.
        ("IVF64,PQ32x4", {"nprobe": 8}, 0.1),
        ("HNSW32", {"ef_search": 64}, 0.9),
    ],
)
@pytest.mark.all_cores
def test_faiss_indexes_find_the_neighbours_and_the_rerank_makes_them_exact(clusters, factory, options, floor):
    corpus, queries = clusters
    exact = exact_search(queries, corpus, 10, 8192, 4096)
    settings = dict(chunk_size=1000, train_size=4000, **options)
    scores, rows = faiss_search(queries, corpus, 10, factory, **settings)
    assert rows.shape == (200, 10) and ((rows >= 0) & (rows < len(corpus))).all()
    assert all(len(set(r.tolist())) == 10 for r in rows)
    assert (scores[:, :-1] >= scores[:, 1:] - 1e-6).all()
    assert recall(rows, exact.indices) >= floor
    if "PQ" not in factory:  # PQ scores are approximations; the others are inner products
        assert np.allclose(scores, np.einsum("qd,qkd->qk", queries, corpus[rows.numpy()]), atol=1e-5)

    # Deep enough that the exact top 10 is among the candidates for most queries, even with PQ.
    _, candidates = faiss_search(queries, corpus, 200, factory, **settings)
    reranked_scores, reranked = faiss_search(queries, corpus, 10, factory, rerank_depth=200, **settings)
    inside = [i for i in range(len(queries)) if set(exact.indices[i].tolist()) <= set(candidates[i].tolist())]
    assert len(inside) >= len(queries) * floor
    assert torch.equal(reranked[inside], exact.indices[inside])
    assert torch.equal(reranked_scores[inside], exact.scores[inside])


def test_mining_with_an_exhaustive_ivf_index_and_rerank_gives_the_exact_negatives(toy_encoder):
    triplets, passages = make_triplets(), make_passages()
    exact = mine_negatives(triplets, passages, toy_encoder, MiningConfig(num_negatives=4)).candidates
    ivf = MiningConfig(num_negatives=4, search="faiss", faiss_index="IVF4,Flat", faiss_nprobe=4, faiss_rerank=40)
    approximate = mine_negatives(triplets, passages, toy_encoder, ivf).candidates
    mined = pl.col("source") == "mined"
    assert approximate.filter(mined).equals(exact.filter(mined))
    assert approximate.filter(~mined)["rank"].is_null().all()


def test_an_index_parameter_it_does_not_have_is_refused(clusters):
    corpus, queries = clusters
    with pytest.raises(ValueError, match="has no parameter nprobe"):
        faiss_search(queries, corpus, 5, "HNSW16", chunk_size=1000, train_size=1000, nprobe=4)
