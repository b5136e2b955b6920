"""The refined training sets as files other tools train on, one folder per configuration:
FlagEmbedding JSONL, Tevatron JSONL, and sentence-transformers datasets in two layouts, each as
Parquet and as a `datasets.Dataset.save_to_disk` folder (`datasets.load_from_disk` gives the
trainer's `train_dataset`):

- `sentence_transformers.parquet` and `sentence_transformers/`: the triplet layout
  (anchor, positive, negative), one row per positive x negative of a query;
- `sentence_transformers_ntuple.parquet` and `sentence_transformers_ntuple/`: the n-tuple layout
  (anchor, positive, negative_1..negative_n), as `mine_hard_negatives(output_format="n-tuple")`
  writes it, one row per (query, positive).

An n-tuple row needs exactly n negatives. Like mine_hard_negatives, which drops a row it cannot fill
rather than pad it with repeats or blanks (either would train on fake negatives), a row with fewer
than n negatives is dropped, and a row with more keeps its first n in the refined order. n is the
largest count that keeps at least `NTUPLE_KEPT_SHARE` of the rows with negatives: one odd query
cannot shrink every row, nor a large n drop many queries. Without any negative, the layout is
(anchor, positive). The folder's `info.description` states n and the rows dropped; the triplet
layout keeps every negative.

Every file and folder is written under a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl

from arhn_assets.core.beir_io import passage_text

NTUPLE_KEPT_SHARE = 0.95


def _texts(passages: pl.DataFrame) -> dict[str, tuple[str, str]]:
    return {d: (t or "", x or "") for d, t, x in passages.select("doc_id", "title", "text").iter_rows()}


def _write_text(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def _write_dataset(frame: pl.DataFrame, path: Path, description: str) -> None:
    """`frame` as a `datasets` save_to_disk folder at `path`, swapped in whole: the old folder is
    moved aside, the new one renamed into place, then the old one deleted."""
    from datasets import Dataset, DatasetInfo, Features, Value

    features = Features({name: Value("string") for name in frame.columns})
    dataset = Dataset.from_dict(frame.to_dict(as_series=False), info=DatasetInfo(description, features=features))
    tmp, old = (path.with_name(f".{path.name}.{kind}-{os.getpid()}") for kind in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    # One shard when empty: datasets cannot load back a folder saved with no shard.
    dataset.save_to_disk(str(tmp), num_shards=1 if len(dataset) == 0 else None)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def ntuple_width(counts: list[int], kept_share: float = NTUPLE_KEPT_SHARE) -> int:
    """The n of the n-tuple layout: the largest negative count that at least `kept_share` of the
    rows with negatives reach (0 when no row has one)."""
    having = sorted(c for c in counts if c > 0)
    if not having:
        return 0
    return having[int(len(having) * (1 - kept_share))]


def ntuple_frame(rows: list[tuple[str, str, list[str]]], config: str) -> tuple[pl.DataFrame, str]:
    """(anchor, positive, negative_1..n) from (query, positive, negatives) rows, and a description."""
    n = ntuple_width([len(negatives) for _, _, negatives in rows])
    kept = [(query, positive, *negatives[:n]) for query, positive, negatives in rows if len(negatives) >= n]
    columns = ["anchor", "positive", *(f"negative_{i}" for i in range(1, n + 1))]
    frame = pl.DataFrame(kept, schema=dict.fromkeys(columns, pl.String), orient="row")
    description = (
        f"arhn refined training set, configuration {config}: n-tuple layout with {n} negatives per row; "
        f"{len(rows) - len(kept)} of {len(rows)} (query, positive) rows dropped for having fewer than {n} negatives"
    )
    return frame, description


def export_training_files(
    refined: pl.DataFrame, triplets: pl.DataFrame, passages: pl.DataFrame, folder: Path
) -> dict[str, str]:
    """Write each configuration's refined set in every export format; returns {file kind: path}."""
    folder = Path(folder)
    texts = _texts(passages)
    queries = dict(triplets.select("query_id", "query_text").iter_rows())
    written: dict[str, str] = {}
    for (config,), group in refined.group_by("config", maintain_order=True):
        target = folder / config.replace("+", "_plus_")
        target.mkdir(parents=True, exist_ok=True)
        bge, tevatron, rows, tuples = [], [], [], []
        for query_id, positives, negatives in group.select("query_id", "positive_ids", "negative_ids").iter_rows():
            query = queries[query_id]
            full = {d: passage_text(*texts[d]) for d in positives + negatives}
            bge.append({"query": query, "pos": [full[d] for d in positives], "neg": [full[d] for d in negatives]})
            tevatron.append(
                {
                    "query_id": query_id,
                    "query": query,
                    "positive_passages": [{"docid": d, "title": texts[d][0], "text": texts[d][1]} for d in positives],
                    "negative_passages": [{"docid": d, "title": texts[d][0], "text": texts[d][1]} for d in negatives],
                }
            )
            rows.extend((query, full[p], full[n]) for p in positives for n in negatives)
            tuples.extend((query, full[p], [full[n] for n in negatives]) for p in positives)
        for kind, lines in (("flagembedding", bge), ("tevatron", tevatron)):
            path = target / f"{kind}.jsonl"
            _write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
            written[f"{config}/{kind}"] = str(path)
        triplet = pl.DataFrame(rows, schema=dict.fromkeys(["anchor", "positive", "negative"], pl.String), orient="row")
        ntuple, ntuple_description = ntuple_frame(tuples, config)
        layouts = {
            "sentence_transformers": (triplet, f"arhn refined training set, configuration {config}: triplet layout"),
            "sentence_transformers_ntuple": (ntuple, ntuple_description),
        }
        for kind, (frame, description) in layouts.items():
            _write_parquet(frame, target / f"{kind}.parquet")
            _write_dataset(frame, target / kind, description)
            written[f"{config}/{kind}"] = str(target / f"{kind}.parquet")
            written[f"{config}/{kind}_dataset"] = str(target / kind)
    return written
