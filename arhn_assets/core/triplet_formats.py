"""Training-triplet files people already have: FlagEmbedding/BGE JSONL, Tevatron JSONL, Parquet in
arhn's own `raw_triplets` columns, and sentence-transformers layouts (core/st_formats.py: Parquet,
JSONL lines or a `datasets` save_to_disk folder).

Each line (or Parquet row) is checked on its own shape, so a file mixing BGE and Tevatron lines
still loads. A bad row becomes a `LineIssue` naming file, line and field; the row is left out
whole (a half-kept row would silently change the training set) and every other row is kept.
Texts that arrive without ids get stable content-hash ids, or the id of the identical passage
or query in the dataset's BEIR corpus when there is one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from arhn_assets.core.beir_io import LineIssue, iter_jsonl, passage_text
from arhn_assets.core.paths import InvalidFileName, validate_file_name

LANDED_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
PASSAGES_SCHEMA = {
    "dataset": pl.String,
    "doc_id": pl.String,
    "title": pl.String,
    "text": pl.String,
    "origin": pl.String,
}
OWN_PARQUET_COLUMNS = ("query_id", "query_text", "positive_ids", "provided_negative_ids")


def content_id(text: str) -> str:
    """A stable id for a text that arrived without one."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def is_landed_file(path: Path) -> bool:
    """Landed files by name, and every folder (a `datasets` save_to_disk folder, or a folder that
    must be named in the quarantine); hidden names are in-flight writes (write '.name', then rename)."""
    return not path.name.startswith(".") and (path.name.endswith(LANDED_SUFFIXES) or path.is_dir())


class RowError(ValueError):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass
class TripletRecord:
    query_id: str
    query_text: str
    positive_ids: list[str]
    provided_negative_ids: list[str]
    positive_scores: list[float] | None
    provided_negative_scores: list[float] | None
    query_prompt: str | None
    source: str
    source_file: str
    source_line: int


@dataclass
class PassageRegistry:
    """Every passage the dataset knows: the BEIR corpus plus passages met in landed files."""

    titles: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    id_by_text: dict[str, str] = field(default_factory=dict)
    query_id_by_text: dict[str, str] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)

    @classmethod
    def from_corpus(cls, corpus: pl.DataFrame, queries: pl.DataFrame | None = None) -> PassageRegistry:
        registry = cls()
        for doc_id, title, text in corpus.iter_rows():
            registry.add(doc_id, title, text, "beir")
        if queries is not None:
            registry.query_id_by_text = {text: qid for qid, text in queries.iter_rows()}
        return registry

    def add(self, doc_id: str, title: str, text: str, origin: str) -> None:
        if doc_id in self.texts:
            return
        self.titles[doc_id] = title
        self.texts[doc_id] = text
        self.origin[doc_id] = origin
        self.added.append(doc_id)
        self.id_by_text.setdefault(text, doc_id)
        self.id_by_text.setdefault(passage_text(title, text), doc_id)

    def rollback(self, mark: int) -> None:
        """Forget the passages added since `len(self.added) == mark` (a row that was rejected)."""
        for doc_id in self.added[mark:]:
            for key in (self.texts[doc_id], passage_text(self.titles[doc_id], self.texts[doc_id])):
                if self.id_by_text.get(key) == doc_id:
                    del self.id_by_text[key]
            del self.titles[doc_id], self.texts[doc_id], self.origin[doc_id]
        del self.added[mark:]

    def id_for_text(self, text: str, title: str, origin: str) -> str:
        known = self.id_by_text.get(passage_text(title, text)) or self.id_by_text.get(text)
        if known is not None:
            return known
        doc_id = content_id(passage_text(title, text))
        self.add(doc_id, title, text, origin)
        return doc_id

    def query_id_for_text(self, text: str) -> str:
        return self.query_id_by_text.get(text) or content_id(text)

    def to_frame(self, dataset: str) -> pl.DataFrame:
        ids = list(self.texts)
        return pl.DataFrame(
            {
                "dataset": [dataset] * len(ids),
                "doc_id": ids,
                "title": [self.titles[i] for i in ids],
                "text": [self.texts[i] for i in ids],
                "origin": [self.origin[i] for i in ids],
            },
            schema=PASSAGES_SCHEMA,
        )


def require_text(obj: dict, name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise RowError(name, "missing")
    if not isinstance(value, str):
        raise RowError(name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(name, "empty")
    return value


def _optional_id(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowError(name, f"expected a string or integer id, got {type(value).__name__}")
    return str(value)


def _list(obj: dict, name: str, required: bool) -> list:
    value = obj.get(name)
    if value is None:
        if required:
            raise RowError(name, "missing")
        return []
    if not isinstance(value, list):
        raise RowError(name, f"expected a list, got {type(value).__name__}")
    if required and not value:
        raise RowError(name, "empty list: a training query needs at least one positive")
    return value


def _scores(obj: dict, name: str, expected: int) -> list[float] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != expected:
        raise RowError(name, f"expected a list of {expected} numbers (one per passage)")
    for i, score in enumerate(value):
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise RowError(f"{name}[{i}]", f"expected a finite number, got {score!r}")
    return [float(s) for s in value]


def _bge_passages(values: list, name: str, registry: PassageRegistry, origin: str) -> list[str]:
    ids = []
    for i, text in enumerate(values):
        if not isinstance(text, str):
            raise RowError(f"{name}[{i}]", f"expected a passage string, got {type(text).__name__}")
        if not text.strip():
            raise RowError(f"{name}[{i}]", "empty passage")
        ids.append(registry.id_for_text(text, "", origin))
    return ids


def _tevatron_passages(values: list, name: str, registry: PassageRegistry, origin: str) -> list[str]:
    ids = []
    for i, passage in enumerate(values):
        where = f"{name}[{i}]"
        if not isinstance(passage, dict):
            raise RowError(where, f"expected an object with docid/title/text, got {type(passage).__name__}")
        doc_id = _optional_id(passage, "docid")
        title = passage.get("title") or ""
        text = passage.get("text")
        if not isinstance(title, str):
            raise RowError(f"{where}.title", f"expected a string, got {type(title).__name__}")
        if text is not None and not isinstance(text, str):
            raise RowError(f"{where}.text", f"expected a string, got {type(text).__name__}")
        has_text = bool(text and text.strip()) or bool(title.strip())
        if doc_id is None:
            if not has_text:
                raise RowError(where, "neither docid nor text")
            doc_id = registry.id_for_text(text or "", title, origin)
        elif doc_id not in registry.texts:
            if not has_text:
                raise RowError(f"{where}.docid", f"unknown doc id {doc_id!r} and no text to define it")
            registry.add(doc_id, title, text or "", origin)
        ids.append(doc_id)
    return ids


def parse_json_record(obj: dict, registry: PassageRegistry, file: str, line: int) -> TripletRecord:
    """One BGE or Tevatron line, recognised by its fields."""
    origin = Path(file).name
    if "positive_passages" in obj:
        query_text = require_text(obj, "query")
        positives = _tevatron_passages(_list(obj, "positive_passages", True), "positive_passages", registry, origin)
        negatives = _tevatron_passages(_list(obj, "negative_passages", False), "negative_passages", registry, origin)
        query_id = _optional_id(obj, "query_id") or registry.query_id_for_text(query_text)
        return TripletRecord(query_id, query_text, positives, negatives, None, None, None, "tevatron", file, line)
    if "pos" in obj:
        query_text = require_text(obj, "query")
        pos_values = _list(obj, "pos", True)
        neg_values = _list(obj, "neg", False)
        positives = _bge_passages(pos_values, "pos", registry, origin)
        negatives = _bge_passages(neg_values, "neg", registry, origin)
        prompt = obj.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise RowError("prompt", f"expected a string, got {type(prompt).__name__}")
        return TripletRecord(
            registry.query_id_for_text(query_text),
            query_text,
            positives,
            negatives,
            _scores(obj, "pos_scores", len(pos_values)),
            _scores(obj, "neg_scores", len(neg_values)),
            prompt or None,
            "bge",
            file,
            line,
        )
    raise RowError(
        "<line>",
        "neither a BGE line ('query', 'pos', 'neg'), a Tevatron line ('query_id', 'query', 'positive_passages', "
        "'negative_passages') nor a sentence-transformers row (an anchor: anchor|query|question, and a positive: "
        f"positive|answer|passage|document); fields present: {sorted(obj)[:8]}",
    )


def parse_parquet_row(row: dict, registry: PassageRegistry, file: str, line: int) -> TripletRecord:
    query_text = require_text(row, "query_text")
    query_id = _optional_id(row, "query_id")
    if query_id is None:
        raise RowError("query_id", "missing")
    id_lists = {}
    for name, required in (("positive_ids", True), ("provided_negative_ids", False)):
        values = _list(row, name, required)
        for i, doc_id in enumerate(values):
            if not isinstance(doc_id, str) or not doc_id:
                raise RowError(f"{name}[{i}]", f"expected a doc id string, got {doc_id!r}")
            if doc_id not in registry.texts:
                raise RowError(f"{name}[{i}]", f"unknown doc id {doc_id!r} (not in the corpus or any landed file)")
        id_lists[name] = values
    return TripletRecord(
        query_id,
        query_text,
        id_lists["positive_ids"],
        id_lists["provided_negative_ids"],
        None,
        None,
        None,
        "parquet",
        file,
        line,
    )


def _parse_rows(parse, numbered, registry: PassageRegistry, file: str) -> tuple[list, list[LineIssue]]:
    """Parse each numbered row; a rejected row leaves no passage behind."""
    records: list[TripletRecord] = []
    issues: list[LineIssue] = []
    line = 0
    try:
        for line, obj, issue in numbered:
            if issue:
                issues.append(issue)
                continue
            mark = len(registry.added)
            try:
                record = parse(obj, registry, file, line)
            except RowError as err:
                registry.rollback(mark)
                issues.append(LineIssue(file, line, err.field, err.reason))
                continue
            if record is not None:  # None: a sentence-transformers row, gathered under its anchor
                records.append(record)
    except (OSError, EOFError) as exc:  # truncated gzip, a directory named *.jsonl, I/O errors
        issues.append(LineIssue(file, line + 1, "<file>", f"unreadable from here on: {type(exc).__name__}: {exc}"))
    return records, issues


def _open_frame(path: Path) -> pl.DataFrame | str:
    """The rows of a Parquet file or a `datasets` folder, or why they cannot be read."""
    from arhn_assets.core.st_formats import read_dataset_folder  # st_formats builds on this module

    if path.is_dir():
        return read_dataset_folder(path)
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for a corrupt or non-Parquet file
        return f"unreadable Parquet: {exc}"


def read_landed_file(path: Path, registry: PassageRegistry) -> tuple[list[TripletRecord], list[LineIssue]]:
    """Parse one landed file (or `datasets` folder); returns its valid records and one issue per
    rejected row. Sentence-transformers rows become one record per anchor (core/st_formats.py)."""
    from arhn_assets.core.st_formats import StGroups, frame_parser  # st_formats builds on this module

    file = str(path)
    try:
        validate_file_name(path.name)
    except InvalidFileName as refused:  # checked before the file is opened, or even stat'ed
        return [], [LineIssue(file, 0, "<file name>", str(refused))]
    if not path.is_file() and not path.is_dir():
        return [], [LineIssue(file, 0, "<file>", "not a regular file")]
    groups = StGroups(file)
    if path.is_dir() or path.name.endswith(".parquet"):
        frame = _open_frame(path)
        if isinstance(frame, str):
            return [], [LineIssue(file, 0, "<file>", frame)]
        chosen = frame_parser(frame, file, groups)
        if isinstance(chosen, list):
            return [], chosen
        parse, numbered = chosen
    else:
        parse, numbered = groups.json_parser(), iter_jsonl(path)
    records, issues = _parse_rows(parse, numbered, registry, file)
    grouped, group_issues = groups.records(registry)
    records += grouped
    issues += group_issues
    if not records and not issues:  # so the quarantine table names an empty file too
        issues.append(LineIssue(file, 0, "<file>", "empty file: no row to read"))
    return records, issues
