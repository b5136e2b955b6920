"""Stage 0, ingest: build a dataset's training triplets, its passage table and its quarantine.

Two sources, by what the dataset has:
- landed files (`$ARHN_HOME/landing/<dataset>/*.jsonl[.gz]|*.parquet`) with negatives already
  mined: these are the triplets; a BEIR folder of the same name, when present, supplies the
  corpus their ids and texts are matched against (and that mining searches);
- otherwise the BEIR folder alone: one row per training query (qrels `train`, else `dev`) with
  every document of score > 0 as a positive and no provided negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from arhn_assets.core.beir_io import (
    ISSUES_SCHEMA,
    BeirDataset,
    DatasetNotFound,
    LineIssue,
    load_beir_dataset,
)
from arhn_assets.core.instructions import resolve_instruction
from arhn_assets.core.paths import ArhnPaths, validate_dataset_key
from arhn_assets.core.sampling import QuerySample
from arhn_assets.core.triplet_formats import (
    PassageRegistry,
    TripletRecord,
    is_landed_file,
    read_landed_file,
)

TRIPLETS_SCHEMA = {
    "dataset": pl.String,
    "query_id": pl.String,
    "query_text": pl.String,
    "positive_ids": pl.List(pl.String),
    "provided_negative_ids": pl.List(pl.String),
    "positive_scores": pl.List(pl.Float64),
    "provided_negative_scores": pl.List(pl.Float64),
    "query_prompt": pl.String,
    "instruction": pl.String,  # what relevance means for the dataset (core/instructions.py); '' = none
    "source": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
}
QUARANTINE_SCHEMA = {"dataset": pl.String, **ISSUES_SCHEMA}


@dataclass
class IngestResult:
    dataset: str
    triplets: pl.DataFrame
    passages: pl.DataFrame
    quarantine: pl.DataFrame
    sources: dict[str, int] = field(default_factory=dict)
    files_without_valid_rows: list[str] = field(default_factory=list)
    training_split: str | None = None

    def failure_summary(self) -> str | None:
        """Why this ingest must fail the materialization, or None when it may succeed."""
        if self.files_without_valid_rows:
            reasons = (
                self.quarantine.filter(pl.col("file").is_in(self.files_without_valid_rows))
                .group_by("file", "field", "reason")
                .len()
                .sort("len", descending=True)
                .head(10)
            )
            lines = [
                f"  {r['file']} [{r['field']}] {r['reason']} ({r['len']} rows)" for r in reasons.iter_rows(named=True)
            ]
            # Name every such file, also one whose reasons fell outside the first ten.
            named = set(reasons["file"])
            counts = dict(self.quarantine.group_by("file").len().iter_rows())
            lines += [f"  {f} ({counts[f]} quarantined rows)" for f in self.files_without_valid_rows if f not in named]
            return (
                f"{len(self.files_without_valid_rows)} landed file(s) of dataset {self.dataset!r} have no valid row; "
                "valid rows of other files and the quarantine table were kept. First reasons:\n" + "\n".join(lines)
            )
        if self.triplets.is_empty():
            return f"dataset {self.dataset!r} produced no valid training triplet (see the quarantine table)"
        return None


def landed_files(landing_dir: Path) -> list[Path]:
    if not landing_dir.is_dir():
        return []
    return sorted(p for p in landing_dir.iterdir() if is_landed_file(p))


def _records_frame(dataset: str, records: list[TripletRecord], instruction: str) -> pl.DataFrame:
    given = {"dataset": [dataset] * len(records), "instruction": [instruction] * len(records)}
    columns = {name: [getattr(r, name) for r in records] for name in TRIPLETS_SCHEMA if name not in given}
    return pl.DataFrame(given | columns, schema=TRIPLETS_SCHEMA)


def _passage_ids(records: list[TripletRecord]) -> set[str]:
    return {doc_id for r in records for doc_id in (*r.positive_ids, *r.provided_negative_ids)}


def _beir_records(beir: BeirDataset, split: str, issues: list[LineIssue]) -> list[TripletRecord]:
    qrels_path = beir.root / "qrels" / f"{split}.tsv"
    qrels = beir.qrels(split).with_row_index("line", offset=2)  # line 1 is the header
    query_text = dict(beir.queries.iter_rows())
    known_docs = set(beir.corpus["doc_id"])
    positives: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for line, query_id, doc_id, score in qrels.iter_rows():
        if score is None or score <= 0:
            continue
        if query_id not in query_text:
            issues.append(
                LineIssue(str(qrels_path), line, "query-id", f"unknown query id {query_id!r} (not in queries.jsonl)")
            )
            continue
        if doc_id not in known_docs:
            issues.append(
                LineIssue(str(qrels_path), line, "corpus-id", f"unknown doc id {doc_id!r} (not in the corpus)")
            )
            continue
        first_line.setdefault(query_id, line)
        docs = positives.setdefault(query_id, [])
        if doc_id not in docs:
            docs.append(doc_id)
    return [
        TripletRecord(
            qid, query_text[qid], docs, [], None, None, None, f"beir:{split}", str(qrels_path), first_line[qid]
        )
        for qid, docs in positives.items()
    ]


@dataclass(frozen=True)
class IngestConfig:
    download: bool = field(default=True, metadata={"doc": "fetch a missing BEIR dataset with beir's downloader"})
    instruction: str | None = field(
        default=None,
        metadata={
            "doc": "what relevance means here, for both LLM prompts and an encoder prompt's {instruction} slot: "
            "null = the known default of a BEIR dataset (core/instructions.py), '' = none"
        },
    )


def _load_sources(dataset: str, paths: ArhnPaths, download: bool) -> tuple[list[Path], BeirDataset | None]:
    """The dataset's landed files and its BEIR folder (None when there are landed files but no folder)."""
    files = landed_files(paths.landing_dir(dataset))
    try:
        # With landed files the BEIR folder is optional context, so never download for it.
        beir = load_beir_dataset(dataset, paths.dataset_dirs(dataset), download=download and not files)
    except DatasetNotFound:
        if not files:
            raise
        beir = None
    return files, beir


def _read_landed_files(
    files: list[Path], registry: PassageRegistry, issues: list[LineIssue]
) -> tuple[list[TripletRecord], list[str]]:
    """The records of every landed file, and the files that gave none; their issues go to `issues`."""
    records: list[TripletRecord] = []
    files_without_valid_rows: list[str] = []
    # JSONL first: its passages define ids that Parquet rows may refer to.
    for path in sorted(files, key=lambda p: (p.name.endswith(".parquet"), p.name)):
        file_records, file_issues = read_landed_file(path, registry)
        records.extend(file_records)
        issues.extend(file_issues)
        if not file_records:
            files_without_valid_rows.append(str(path))
    return records, files_without_valid_rows


def _drop_duplicate_queries(
    records: list[TripletRecord], issues: list[LineIssue]
) -> tuple[list[TripletRecord], set[str]]:
    """The first record of each query, and the passage ids only a rejected duplicate brought.

    Each rejected duplicate is quarantined in `issues`."""
    kept: list[TripletRecord] = []
    seen: dict[str, TripletRecord] = {}
    duplicates: list[TripletRecord] = []
    for record in records:
        first = seen.get(record.query_id)
        if first is not None:
            issues.append(
                LineIssue(
                    record.source_file,
                    record.source_line,
                    "query_id",
                    f"duplicate query {record.query_id!r} (first seen at "
                    f"{Path(first.source_file).name}:{first.source_line}; that row is kept)",
                )
            )
            duplicates.append(record)
            continue
        seen[record.query_id] = record
        kept.append(record)
    # A rejected duplicate leaves no passage behind that only it brought.
    orphans = _passage_ids(duplicates) - _passage_ids(kept)
    return kept, orphans


def ingest(
    dataset: str, paths: ArhnPaths, config: IngestConfig = IngestConfig(), sample: QuerySample = QuerySample()
) -> IngestResult:
    """The dataset's triplets (the queries `sample` picks), passages and quarantine."""
    validate_dataset_key(dataset)
    files, beir = _load_sources(dataset, paths, config.download)
    issues: list[LineIssue] = list(beir.issues) if beir else []
    registry = PassageRegistry.from_corpus(beir.corpus, beir.queries) if beir else PassageRegistry()
    split = None
    if files:
        records, files_without_valid_rows = _read_landed_files(files, registry, issues)
    else:
        split = beir.training_split()
        records, files_without_valid_rows = _beir_records(beir, split, issues), []

    kept, orphans = _drop_duplicate_queries(records, issues)
    # Sample after de-duplication, so the quarantine reports every duplicate, sampled or not.
    picked = set(sample.pick([r.query_id for r in kept]))
    kept = [r for r in kept if r.query_id in picked]

    triplets = _records_frame(dataset, kept, resolve_instruction(dataset, config.instruction))
    quarantine = pl.DataFrame(
        [(dataset, i.file, i.line, i.field, i.reason) for i in issues], schema=QUARANTINE_SCHEMA, orient="row"
    )
    sources = dict(triplets.group_by("source").len().sort("source").iter_rows())
    return IngestResult(
        dataset=dataset,
        triplets=triplets,
        passages=registry.to_frame(dataset).filter(~(pl.col("doc_id").is_in(orphans) & (pl.col("origin") != "beir"))),
        quarantine=quarantine,
        sources=sources,
        files_without_valid_rows=files_without_valid_rows,
        training_split=split,
    )
