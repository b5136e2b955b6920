"""What the judge is audited against: planted false negatives (qrels) and RLHN's recorded verdicts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from arhn_assets.core.beir_io import iter_jsonl
from arhn_assets.core.ingest import TRIPLETS_SCHEMA
from arhn_assets.core.mining import CANDIDATES_SCHEMA
from arhn_assets.core.sampling import QuerySample
from arhn_assets.core.triplet_formats import PassageRegistry, RowError, parse_json_record

LABELS_SCHEMA = {"query_id": pl.String, "doc_id": pl.String, "label": pl.String, "mining_rank": pl.Int64}

VERDICT_BLOCK = re.compile(r"<verdict>(?P<body>.*?)</verdict>", re.DOTALL)
VERDICT_LIST = r"<{tag}>[^\[]*\[(?P<docs>[^\]]*)\]\s*</{tag}>"
DOC_NUMBER = re.compile(r"Doc\s*\((\d+)\)")


@dataclass
class AuditSet:
    """What a judge is audited on: the triplets and candidates it judges, the passages it reads,
    and the truth's label of every candidate negative (`LABELS_SCHEMA`)."""

    triplets: pl.DataFrame
    labels: pl.DataFrame
    candidates: pl.DataFrame | None = None  # None: to be mined from the corpus
    passages: pl.DataFrame | None = None  # None: the dataset's corpus
    problems: tuple[str, ...] = ()


def planted_false_negatives(qrels: pl.DataFrame, min_score: int = 1) -> pl.DataFrame:
    """Per query with at least two documents scored >= `min_score` (graded qrels: raise it to
    count only the more relevant ones): the positive kept (the first listed) and the relevant
    documents planted among the candidates as false negatives.

    qrels: query_id, doc_id, score (beir_io's QRELS_SCHEMA)."""
    relevant = qrels.filter(pl.col("score") >= min_score).unique(
        ["query_id", "doc_id"], keep="first", maintain_order=True
    )
    return (
        relevant.group_by("query_id", maintain_order=True)
        .agg(doc_ids=pl.col("doc_id"))
        .filter(pl.col("doc_ids").list.len() >= 2)
        .select("query_id", kept_positive=pl.col("doc_ids").list.first(), planted=pl.col("doc_ids").list.slice(1))
    )


def planted_audit_set(
    dataset: str,
    queries: pl.DataFrame,
    qrels: pl.DataFrame,
    min_score: int = 1,
    all_queries: bool = False,
    sample: QuerySample = QuerySample(),
    instruction: str = "",
) -> AuditSet:
    """Triplets whose one positive is the first relevant document of each query, so mining sees
    the other relevant ones as candidates; `labels` lists those planted documents.

    By default only queries with planted documents are audited; `all_queries` adds the queries
    with one relevant document (ordinary negatives only), e.g. to train on the whole split."""
    planted = planted_false_negatives(qrels, min_score)
    if all_queries:
        relevant = qrels.filter(pl.col("score") >= min_score).unique(
            ["query_id", "doc_id"], keep="first", maintain_order=True
        )
        positives = relevant.group_by("query_id", maintain_order=True).agg(kept_positive=pl.col("doc_id").first())
    else:
        positives = planted.select("query_id", "kept_positive")
    texts = queries.select("query_id", query_text="text")
    triplets = sample.apply(positives.join(texts, on="query_id", how="inner", maintain_order="left"))
    triplets = triplets.select(
        dataset=pl.lit(dataset),
        query_id="query_id",
        query_text="query_text",
        positive_ids=pl.concat_list("kept_positive"),
        provided_negative_ids=pl.lit([], dtype=pl.List(pl.String)),
        instruction=pl.lit(instruction),
    )
    labels = (
        planted.filter(pl.col("query_id").is_in(triplets["query_id"].implode()))
        .explode("planted")
        .select("query_id", doc_id="planted", label=pl.lit("planted"), mining_rank=pl.lit(None, dtype=pl.Int64))
    )
    return AuditSet(triplets=_as_triplets(triplets), labels=labels)


def _as_triplets(frame: pl.DataFrame) -> pl.DataFrame:
    missing = {name: pl.lit(None, dtype=dtype) for name, dtype in TRIPLETS_SCHEMA.items() if name not in frame.columns}
    return frame.with_columns(**missing).select(TRIPLETS_SCHEMA.keys()).cast(TRIPLETS_SCHEMA)


def label_candidates(candidates: pl.DataFrame, labels: pl.DataFrame, default: str = "negative") -> pl.DataFrame:
    """Every judged negative with its truth label (`default` where the truth names none) and
    its mining rank (the truth's own, e.g. a recorded list position, where it has one)."""
    negatives = candidates.filter(pl.col("source").is_in(["mined", "provided"])).select("query_id", "doc_id", "rank")
    return negatives.join(labels, on=["query_id", "doc_id"], how="left", maintain_order="left").select(
        "query_id", "doc_id", label=pl.col("label").fill_null(default), mining_rank=pl.coalesce("mining_rank", "rank")
    )


@dataclass(frozen=True)
class RlhnVerdict:
    better: list[int]  # 1-based numbers of the negatives preferred over the ground truth
    worse: list[int]  # relevant, but not preferred


def parse_rlhn_verdict(response: str) -> RlhnVerdict:
    """The `<verdict>` block of an RLHN response (`Doc (n)` is the n-th negative passage)."""
    block = VERDICT_BLOCK.search(response)
    if block is None:
        raise ValueError("no <verdict>...</verdict> block in the response")
    lists = {}
    for tag in ("better", "worse"):
        found = re.search(VERDICT_LIST.format(tag=tag), block["body"], re.DOTALL)
        if found is None:
            raise ValueError(f"the verdict has no <{tag}> [...] </{tag}> list")
        lists[tag] = [int(n) for n in DOC_NUMBER.findall(found["docs"])]
    return RlhnVerdict(**lists)


def rlhn_verdicts(records: Iterable[tuple[int, dict]], source: str) -> tuple[pl.DataFrame, list[str]]:
    """One row per (query, negative) of numbered RLHN judgment records: the verdict on it,
    'better', 'worse' or 'none'; and the records skipped, by file and line: a verdict that does
    not parse, or names a document number that is not one of the record's negatives."""
    rows, problems = [], []
    for line, record in records:
        negatives = record.get("negative_passage_ids") or [p["docid"] for p in record.get("negative_passages", [])]
        try:
            verdict = parse_rlhn_verdict(record.get("response") or "")
            outside = sorted(n for n in verdict.better + verdict.worse if not 1 <= n <= len(negatives))
            if outside:
                raise ValueError(f"Doc numbers {outside} outside 1..{len(negatives)}")
        except ValueError as error:
            problems.append(f"{source}:{line} [response] {error}")
            continue
        for number, doc_id in enumerate(negatives, start=1):
            label = "better" if number in verdict.better else "worse" if number in verdict.worse else "none"
            rows.append((str(record["query_id"]), str(doc_id), number, label))
    frame = pl.DataFrame(
        rows,
        schema={"query_id": pl.String, "doc_id": pl.String, "position": pl.Int64, "verdict": pl.String},
        orient="row",
    )
    return frame, problems


def _rlhn_record(record: dict, line: int, path: Path, registry: PassageRegistry, dataset: str, instruction: str):
    """One RLHN record as (triplet, candidate rows, verdict rows), or raises ValueError naming the
    field; the caller rolls the registry back then."""
    try:
        parsed = parse_json_record(record, registry, str(path), line)
    except RowError as error:
        raise ValueError(f"{path}:{line} [{error.field}] {error.reason}") from error
    verdicts, skipped = rlhn_verdicts(
        [(line, {**record, "negative_passage_ids": parsed.provided_negative_ids})], str(path)
    )
    if skipped:
        raise ValueError(skipped[0])
    triplet = {
        **dict.fromkeys(TRIPLETS_SCHEMA),
        "dataset": dataset,
        "query_id": parsed.query_id,
        "query_text": parsed.query_text,
        "positive_ids": parsed.positive_ids,
        "provided_negative_ids": parsed.provided_negative_ids,
        "source": parsed.source,
        "instruction": instruction,
        "source_file": str(path),
        "source_line": line,
    }
    candidates = [(dataset, parsed.query_id, d, "positive", None, None, None) for d in parsed.positive_ids]
    candidates += [
        (dataset, parsed.query_id, d, "provided", i, None, None)
        for i, d in enumerate(parsed.provided_negative_ids, start=1)
    ]
    return triplet, candidates, verdicts


def rlhn_audit_set(path: Path, dataset: str, sample: QuerySample = QuerySample(), instruction: str = "") -> AuditSet:
    """The records of an RLHN judgment file (Tevatron lines plus the judge's `response`) as an
    audit set: each record's positives and negatives, in the recorded order, are the candidates,
    and its verdicts the labels. A line that is not a valid Tevatron record or whose verdict does
    not parse is skipped and named in `problems` by file, line and field."""
    registry = PassageRegistry()
    triplets, candidates, numbered, problems = [], [], [], []
    for line, record, issue in iter_jsonl(path):
        if issue is not None:
            problems.append(f"{issue.file}:{issue.line} [{issue.field}] {issue.reason}")
            continue
        mark = len(registry.added)
        try:
            triplet, rows, verdicts = _rlhn_record(record, line, path, registry, dataset, instruction)
        except ValueError as problem:
            registry.rollback(mark)
            problems.append(str(problem))
            continue
        triplets.append(triplet)
        candidates += rows
        numbered.append(verdicts)
    labels = (
        pl.concat(numbered)
        .select("query_id", "doc_id", label="verdict", mining_rank="position")
        .unique(["query_id", "doc_id"], keep="first", maintain_order=True)
        if numbered
        else pl.DataFrame(schema=LABELS_SCHEMA)
    )
    picked = sample.apply(pl.DataFrame(triplets, schema=TRIPLETS_SCHEMA))
    chosen = pl.col("query_id").is_in(picked["query_id"].implode())
    candidates = pl.DataFrame(candidates, schema=CANDIDATES_SCHEMA, orient="row").filter(chosen)
    passages = registry.to_frame(dataset)
    return AuditSet(
        triplets=picked,
        labels=labels.filter(chosen),
        candidates=candidates.unique(["query_id", "doc_id"], keep="first", maintain_order=True),
        passages=passages.filter(pl.col("doc_id").is_in(candidates["doc_id"].implode())),
        problems=tuple(problems),
    )
