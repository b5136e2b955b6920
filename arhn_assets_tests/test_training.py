"""Fine-tuning on a small slice: rows, a model that changed, a loadable folder with its card."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from arhn_assets.core.training import TrainingConfig, teacher_scores, train_retriever, training_rows
from arhn_assets_tests.helpers.toy_data import make_passages, make_triplets
from arhn_assets_tests.helpers.training import TRAINING_RUN, refined_slice, train_toy

pytestmark = pytest.mark.all_cores


def test_rows_cover_every_positive_and_rotate_the_negatives():
    refined = pl.DataFrame(
        {
            "query_id": ["q_rise"],
            "positive_ids": [["bread-0", "bread-1"]],
            "negative_ids": [["vaccine-0", "photo-0", "photo-1"]],
        }
    )
    rows, pairs = training_rows(refined, make_triplets(), make_passages(), negatives_per_row=2)
    assert pairs.height == 0 and rows.columns == ["anchor", "positive", "negative_1", "negative_2"]
    texts = dict(make_passages().select("doc_id", "text").iter_rows())
    # Per positive: [vaccine-0, photo-0], then [photo-1, vaccine-0] (wrapped).
    assert rows.height == 4 and rows["positive"].to_list() == [texts["bread-0"]] * 2 + [texts["bread-1"]] * 2
    assert rows["negative_1"].to_list()[:2] == [texts["vaccine-0"], texts["photo-1"]]
    assert rows["negative_2"].to_list()[:2] == [texts["photo-0"], texts["vaccine-0"]]


def test_distillation_rows_carry_the_teachers_scores():
    refined = pl.DataFrame({"query_id": ["q_rise"], "positive_ids": [["bread-0"]], "negative_ids": [["vaccine-0"]]})
    rankings = pl.DataFrame({"query_id": ["q_rise"], "ranking": [["vaccine-0", "bread-0"]]})
    scores = teacher_scores("llm_rank", pl.DataFrame(), rankings)
    rows, _ = training_rows(refined, make_triplets(), make_passages(), 1, scores)
    assert rows["label"].to_list() == [[-2.0, -1.0]]
    backfilled = pl.DataFrame({"query_id": ["q_rise"], "positive_ids": [["bread-0"]], "negative_ids": [["volcano-0"]]})
    rows, _ = training_rows(backfilled, make_triplets(), make_passages(), 1, scores)
    assert rows["label"].to_list() == [[-2.0, -3.0]]  # never ranked: just below the lowest rank


@pytest.mark.parametrize("loss", ["mnrl", "cached_mnrl"])
@pytest.mark.slow
def test_training_changes_the_model_and_saves_a_loadable_folder(tmp_path, loss):
    from sentence_transformers import SentenceTransformer

    rows, pairs = training_rows(refined_slice(), make_triplets(), make_passages(), 2)
    config = TrainingConfig(loss=loss, batch_size=4, mini_batch_size=2, max_steps=3, learning_rate=1e-4)
    folder = tmp_path / "model"
    result = train_retriever(rows, pairs, config, folder, {"name": "toy"})
    assert result.steps == 3 and not result.reused and pairs.height == 1
    probe = ["How does yeast make bread rise?", "Vaccines train the immune system."]
    trained = SentenceTransformer(str(folder)).encode(probe)
    base = SentenceTransformer(config.base_model_path).encode(probe)
    assert not np.allclose(trained, base, atol=1e-4)
    meta = json.loads((folder / "arhn_training.json").read_text())
    assert meta["data_fingerprint"] == result.data_fingerprint and meta["config"]["loss"] == loss
    assert "arhn training record" in (folder / "README.md").read_text()

    again = train_retriever(rows, pairs, config, folder, {"name": "toy"})
    assert again.reused and again.data_fingerprint == result.data_fingerprint


@pytest.mark.slow
def test_training_is_seeded(tmp_path):
    from sentence_transformers import SentenceTransformer

    rows, pairs = training_rows(refined_slice(), make_triplets(), make_passages(), 1)
    config = TrainingConfig(batch_size=4, max_steps=2, learning_rate=1e-4)
    first = train_retriever(rows, pairs, config, tmp_path / "a", {})
    second = train_retriever(rows, pairs, config, tmp_path / "b", {})
    probe = ["What makes bread rise?"]
    assert np.allclose(
        SentenceTransformer(first.model_path).encode(probe),
        SentenceTransformer(second.model_path).encode(probe),
        atol=1e-5,
    )


def test_distill_kl_refuses_rows_without_hard_negatives(tmp_path):
    rows, pairs = training_rows(refined_slice(), make_triplets(), make_passages(), 1)
    with pytest.raises(ValueError, match="distill_kl needs a hard negative on every row"):
        train_retriever(rows, pairs, TrainingConfig(loss="distill_kl", max_steps=1), tmp_path / "m", {})


@pytest.mark.slow
def test_a_killed_training_keeps_the_previous_model_and_the_rerun_trains_the_same_weights(tmp_path):
    """SIGKILL in the middle of training (issue 8): the model in place stays whole, the rerun
    sweeps the killed run's temporary folder and trains exactly what an uninterrupted run trains."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "model"
    train_toy(folder, 1)
    previous = (folder / "arhn_training.json").read_text()
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-c", TRAINING_RUN, str(folder), "40"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".model.tmp-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # into the optimizer steps
    assert process.poll() is None, "the training should have been killed midway"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (folder / "arhn_training.json").read_text() == previous
    assert SentenceTransformer(str(folder)).encode(["still loads"]).shape == (1, 384)

    resumed = train_toy(folder, 40)
    assert not resumed.reused and resumed.steps == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    uninterrupted = train_toy(tmp_path / "fresh", 40)
    probe = ["What makes bread rise?", "Vaccines train the immune system."]
    assert np.allclose(
        SentenceTransformer(resumed.model_path).encode(probe),
        SentenceTransformer(uninterrupted.model_path).encode(probe),
        atol=1e-6,
    )
