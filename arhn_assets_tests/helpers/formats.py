"""Lines of landed files in the formats arhn reads (core/triplet_formats.py): BGE/FlagEmbedding
and Tevatron JSONL, as dicts for `jsonl_bytes`."""

from __future__ import annotations


def bge(query: str, pos: list, neg: list | None = None, **extra) -> dict:
    line = {"query": query, "pos": pos}
    if neg is not None:
        line["neg"] = neg
    return {**line, **extra}


def tevatron(query_id, query: str, positives: list, negatives: list | None = None) -> dict:
    line = {"query_id": query_id, "query": query, "positive_passages": positives}
    if negatives is not None:
        line["negative_passages"] = negatives
    return line
