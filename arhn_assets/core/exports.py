"""The refined training sets as files other tools train on: FlagEmbedding JSONL, Tevatron JSONL and
sentence-transformers Parquet, one folder per configuration. Every file is written under a
temporary name and renamed, so a reader never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

from arhn_assets.core.beir_io import passage_text


def _texts(passages: pl.DataFrame) -> dict[str, tuple[str, str]]:
    return {d: (t or "", x or "") for d, t, x in passages.select("doc_id", "title", "text").iter_rows()}


def export_training_files(
    refined: pl.DataFrame, triplets: pl.DataFrame, passages: pl.DataFrame, folder: Path
) -> dict[str, str]:
    """Write each configuration's refined set as FlagEmbedding JSONL, Tevatron JSONL and a
    sentence-transformers (anchor, positive, negative) Parquet; returns {file kind: path}.

    Files are written under a temporary name and renamed, so a reader never sees half a file."""
    folder = Path(folder)
    texts = _texts(passages)
    queries = dict(triplets.select("query_id", "query_text").iter_rows())
    written: dict[str, str] = {}
    for (config,), group in refined.group_by("config", maintain_order=True):
        target = folder / config.replace("+", "_plus_")
        target.mkdir(parents=True, exist_ok=True)
        bge, tevatron, rows = [], [], []
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
        outputs = {
            "flagembedding": (
                target / "flagembedding.jsonl",
                "\n".join(json.dumps(r, ensure_ascii=False) for r in bge) + "\n",
            ),
            "tevatron": (
                target / "tevatron.jsonl",
                "\n".join(json.dumps(r, ensure_ascii=False) for r in tevatron) + "\n",
            ),
        }
        for kind, (path, content) in outputs.items():
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(content, encoding="utf-8")
            os.replace(tmp, path)
            written[f"{config}/{kind}"] = str(path)
        parquet = target / "sentence_transformers.parquet"
        tmp = parquet.with_name(f".{parquet.name}.tmp")
        pl.DataFrame(
            rows, schema={"anchor": pl.String, "positive": pl.String, "negative": pl.String}, orient="row"
        ).write_parquet(tmp)
        os.replace(tmp, parquet)
        written[f"{config}/sentence_transformers"] = str(parquet)
    return written
