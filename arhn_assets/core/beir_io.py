"""Reading BEIR-format dataset folders into polars frames.

Written by hand rather than with beir's GenericDataLoader because that loader cannot open
`corpus.jsonl.gz`, returns nested dicts (slow and memory-hungry for large corpora), and stops
at the first bad line; here every bad line is reported with its file, line and field and
the valid lines are kept. beir's own `util.download_and_unzip` fetches missing datasets.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
TRAIN_SPLITS = ("train", "dev")

CORPUS_SCHEMA = {"doc_id": pl.String, "title": pl.String, "text": pl.String}
QUERIES_SCHEMA = {"query_id": pl.String, "text": pl.String}
QRELS_SCHEMA = {"query_id": pl.String, "doc_id": pl.String, "score": pl.Int64}
ISSUES_SCHEMA = {"file": pl.String, "line": pl.Int64, "field": pl.String, "reason": pl.String}


class DatasetNotFound(FileNotFoundError):
    pass


@dataclass
class LineIssue:
    file: str
    line: int
    field: str
    reason: str


@dataclass
class BeirDataset:
    name: str
    root: Path
    corpus: pl.DataFrame  # doc_id, title, text
    queries: pl.DataFrame  # query_id, text
    issues: list[LineIssue] = field(default_factory=list)

    def qrels(self, split: str) -> pl.DataFrame:
        return read_qrels(self.root / "qrels" / f"{split}.tsv")

    def available_splits(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "qrels").glob("*.tsv"))

    def training_split(self) -> str:
        """The split that holds training queries: `train`, else `dev` (SciFact has no dev)."""
        splits = self.available_splits()
        for split in TRAIN_SPLITS:
            if split in splits:
                return split
        raise DatasetNotFound(
            f"{self.root / 'qrels'} has no train.tsv or dev.tsv (found: {splits or 'nothing'}); "
            "arhn needs labelled training queries to build triplets"
        )


def missing_dataset_message(name: str, candidates: list[Path], reason: str) -> str:
    folders = " or ".join(str(c) for c in candidates)
    return (
        f"BEIR dataset {name!r} not found locally and could not be downloaded ({reason}). "
        f"Create {folders} holding: corpus.jsonl or corpus.jsonl.gz (one JSON object per line with "
        "'_id', 'title', 'text'), queries.jsonl ('_id', 'text') and qrels/train.tsv (or dev.tsv), "
        "a tab-separated file with header 'query-id\\tcorpus-id\\tscore'. "
        "Set ARHN_DATA_DIR to the folder that contains your dataset folders."
    )


def find_dataset_dir(name: str, candidates: list[Path], download: bool = True) -> Path:
    for folder in candidates:
        if (folder / "queries.jsonl").exists():
            return folder
    if not download:
        raise DatasetNotFound(missing_dataset_message(name, candidates, "download disabled"))
    target = candidates[-1]
    try:
        from beir import util as beir_util

        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading BEIR dataset %s to %s", name, target.parent)
        beir_util.download_and_unzip(BEIR_URL.format(name=name), str(target.parent))
    except Exception as exc:  # no network, HTTP 404 (unknown dataset), bad zip: all mean "not here"
        raise DatasetNotFound(missing_dataset_message(name, candidates, f"{type(exc).__name__}: {exc}")) from exc
    if not (target / "queries.jsonl").exists():
        raise DatasetNotFound(missing_dataset_message(name, candidates, f"the download did not create {target}"))
    return target


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict | None, LineIssue | None]]:
    """Yield (line number, object, None) per valid line, or (line number, None, issue).

    Reads bytes and decodes each line on its own, so one line of invalid UTF-8 or JSON costs
    that line only. Blank lines are skipped; a UTF-8 BOM on the first line is tolerated.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    # Iterate the file object itself: an extra io.BufferedReader around a GzipFile drops the
    # complete lines it had already read when a truncated gzip raises EOFError mid-chunk.
    with opener(path, "rb") as raw:
        for number, line in enumerate(raw, start=1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    None,
                    LineIssue(str(path), number, "<line>", f"invalid UTF-8: {exc.reason} at byte {exc.start}"),
                )
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield (
                    number,
                    None,
                    LineIssue(str(path), number, "<line>", f"invalid JSON: {exc.msg} at column {exc.colno}"),
                )
                continue
            if not isinstance(obj, dict):
                yield (
                    number,
                    None,
                    LineIssue(str(path), number, "<line>", f"expected a JSON object, got {type(obj).__name__}"),
                )
                continue
            yield number, obj, None


def _read_id_text_file(path: Path, fields: tuple[str, ...], issues: list[LineIssue]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for number, obj, issue in iter_jsonl(path):
        if issue:
            issues.append(issue)
            continue
        doc_id = obj.get("_id")
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            issues.append(LineIssue(str(path), number, "_id", "missing or not a string"))
            continue
        if doc_id in seen:
            issues.append(LineIssue(str(path), number, "_id", f"duplicate id {doc_id!r} (first occurrence kept)"))
            continue
        values = [obj.get(name) if obj.get(name) is not None else "" for name in fields]
        bad = next((name for name, value in zip(fields, values) if not isinstance(value, str)), None)
        if bad:
            issues.append(LineIssue(str(path), number, bad, f"expected a string, got {type(obj[bad]).__name__}"))
            continue
        if not any(value.strip() for value in values):
            issues.append(LineIssue(str(path), number, fields[-1], "empty text"))
            continue
        seen.add(doc_id)
        rows.append((doc_id, *values))
    return rows


def read_corpus(path: Path, issues: list[LineIssue]) -> pl.DataFrame:
    rows = _read_id_text_file(path, ("title", "text"), issues)
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA, orient="row")


def read_queries(path: Path, issues: list[LineIssue]) -> pl.DataFrame:
    rows = _read_id_text_file(path, ("text",), issues)
    return pl.DataFrame(rows, schema=QUERIES_SCHEMA, orient="row")


def read_qrels(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise DatasetNotFound(f"{path} does not exist")
    qrels = pl.read_csv(
        path,
        separator="\t",
        has_header=True,
        new_columns=list(QRELS_SCHEMA),
        schema_overrides=QRELS_SCHEMA,
        quote_char=None,
    )
    return qrels.select(QRELS_SCHEMA.keys())


def load_beir_dataset(name: str, candidates: list[Path], download: bool = True) -> BeirDataset:
    root = find_dataset_dir(name, candidates, download=download)
    corpus_path = next((root / f for f in ("corpus.jsonl", "corpus.jsonl.gz") if (root / f).exists()), None)
    if corpus_path is None:
        raise DatasetNotFound(missing_dataset_message(name, [root], f"{root} has no corpus.jsonl[.gz]"))
    issues: list[LineIssue] = []
    corpus = read_corpus(corpus_path, issues)
    queries = read_queries(root / "queries.jsonl", issues)
    return BeirDataset(name=name, root=root, corpus=corpus, queries=queries, issues=issues)


def passage_text(title: str | None, text: str | None) -> str:
    """The text an encoder sees for a passage: MTEB/BEIR's `title + ' ' + text`, stripped."""
    return f"{title or ''} {text or ''}".strip()


def passage_texts(passages: pl.DataFrame) -> dict[str, str]:
    """doc_id -> the text a model reads (`passage_text`) for a passages frame."""
    return {d: passage_text(t, x) for d, t, x in passages.select("doc_id", "title", "text").iter_rows()}
