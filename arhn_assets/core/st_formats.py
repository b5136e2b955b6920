"""sentence-transformers datasets as landed files: Parquet, JSONL or a `datasets.Dataset.save_to_disk`
folder in the column layouts `sentence_transformers.util.mine_hard_negatives` writes.

A layout is recognised by its column names. The anchor and the positive keep the names of the mined
dataset's first two columns, so each may go by one of a few common names:

| layout | columns |
|---|---|
| pair | anchor, positive |
| triplet | anchor, positive, negative (+ `scores`: [positive, negative]) |
| n-tuple | anchor, positive, negative_1 .. negative_n (+ `scores`: [positive, negative_1, ...]) |
| labeled pair | anchor, positive, label (1 = a positive of the anchor, 0 = a negative) |

with anchor = `anchor` | `query` | `question` and positive = `positive` | `answer` | `passage` |
`document`. All rows of one anchor text in one file become one training query (its positives and
negatives in first-seen order; a text that is a positive of the anchor is never also its negative).
Every other column is refused, with the file and column named: one unknown column is one row-0
quarantine entry and the file is not read (a guessed column would silently change the training set).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from arhn_assets.core.beir_io import LineIssue
from arhn_assets.core.triplet_formats import (
    OWN_PARQUET_COLUMNS,
    PassageRegistry,
    RowError,
    TripletRecord,
    parse_json_record,
    parse_parquet_row,
    require_text,
)

ANCHOR_COLUMNS = ("anchor", "query", "question")
POSITIVE_COLUMNS = ("positive", "answer", "passage", "document")
NEGATIVE, LABEL, SCORES = "negative", "label", "scores"
NEGATIVE_N = re.compile(r"negative_([1-9][0-9]*)")
ACCEPTED = (
    f"sentence-transformers layouts have an anchor ({'|'.join(ANCHOR_COLUMNS)}), a positive "
    f"({'|'.join(POSITIVE_COLUMNS)}), then nothing (pair), 'negative' (triplet), 'negative_1'..'negative_n' "
    "(n-tuple) or 'label' (labeled pair); 'scores' may go with negatives"
)
DATASET_MARKERS = ("state.json", "dataset_info.json")

Parse = Callable[[dict, PassageRegistry, str, int], TripletRecord | None]


@dataclass(frozen=True)
class StLayout:
    name: str  # pair | triplet | n-tuple | labeled-pair
    anchor: str
    positive: str
    negatives: tuple[str, ...] = ()
    label: str | None = None
    scores: str | None = None


def _unknown(column: str) -> str:
    if column == "score":
        return (
            "a similarity score instead of a label (mine_hard_negatives' labeled-pair with output_scores=True) "
            "cannot tell positives from negatives; write the 'label' column (output_scores=False)"
        )
    return f"unknown column {column!r}; {ACCEPTED}"


def st_layout(columns: Iterable[str]) -> tuple[StLayout | None, list[tuple[str, str]]]:
    """The layout of these columns; or None and (column, reason) per problem; (None, []) when they
    have no anchor and positive column, so are no sentence-transformers layout at all."""
    columns = list(columns)
    anchors = [c for c in columns if c in ANCHOR_COLUMNS]
    positives = [c for c in columns if c in POSITIVE_COLUMNS]
    if not anchors or not positives:
        return None, []
    problems = [(c, f"a second anchor column beside {anchors[0]!r}") for c in anchors[1:]]
    problems += [(c, f"a second positive column beside {positives[0]!r}") for c in positives[1:]]
    rest = [c for c in columns if c not in anchors and c not in positives]
    numbered = sorted((c for c in rest if NEGATIVE_N.fullmatch(c)), key=lambda c: int(c.rsplit("_", 1)[1]))
    extras = {c for c in rest if c in (NEGATIVE, LABEL, SCORES)}
    problems += [(c, _unknown(c)) for c in rest if c not in extras and c not in numbered]
    negatives = tuple(numbered) or ((NEGATIVE,) if NEGATIVE in extras else ())
    if numbered and NEGATIVE in extras:
        problems.append((NEGATIVE, "'negative' beside 'negative_1'..'negative_n': one layout per file"))
    if LABEL in extras and negatives:
        problems.append((LABEL, "a labeled pair has one passage per row, so no negative column"))
    if SCORES in extras and not negatives:
        problems.append((SCORES, "'scores' goes with negative columns (triplet or n-tuple)"))
    if problems:
        return None, problems
    label = LABEL if LABEL in extras else None
    name = "labeled-pair" if label else "n-tuple" if numbered else "triplet" if negatives else "pair"
    return StLayout(name, anchors[0], positives[0], negatives, label, SCORES if SCORES in extras else None), []


def _label(row: dict, column: str) -> bool:
    value = row.get(column)
    if value is None:
        raise RowError(column, "missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RowError(column, f"expected a number (1 = positive, 0 = negative), got {type(value).__name__} {value!r}")
    if value not in (0, 1):
        raise RowError(column, f"expected 1 (positive) or 0 (negative), got {value!r}")
    return value == 1


def _row_scores(row: dict, column: str, expected: int) -> list[float] | None:
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != expected:
        raise RowError(column, f"expected a list of {expected} numbers (the positive's, then each negative's)")
    for i, score in enumerate(value):
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise RowError(f"{column}[{i}]", f"expected a finite number, got {score!r}")
    return [float(s) for s in value]


@dataclass
class _Anchor:
    line: int
    layout: StLayout
    positives: dict[str, float | None] = field(default_factory=dict)  # text -> score
    negatives: dict[str, float | None] = field(default_factory=dict)
    scored: bool = True


class StGroups:
    """The sentence-transformers rows of one file, gathered by anchor text."""

    def __init__(self, file: str):
        self.file = file
        self.anchors: dict[str, _Anchor] = {}

    def add(self, row: dict, layout: StLayout, line: int) -> None:
        """Validate one row whole, then file its texts under its anchor (a bad row adds nothing)."""
        anchor = require_text(row, layout.anchor)
        passage = require_text(row, layout.positive)
        negatives = [require_text(row, c) for c in layout.negatives]
        positive = _label(row, layout.label) if layout.label else True
        scores = _row_scores(row, layout.scores, 1 + len(negatives)) if layout.scores else None
        group = self.anchors.setdefault(anchor, _Anchor(line, layout))
        group.scored = group.scored and scores is not None
        scores = scores or [None] * (1 + len(negatives))
        (group.positives if positive else group.negatives).setdefault(passage, scores[0])
        for text, score in zip(negatives, scores[1:]):
            group.negatives.setdefault(text, score)

    def records(self, registry: PassageRegistry) -> tuple[list[TripletRecord], list[LineIssue]]:
        """One record per anchor with a positive; an anchor without one is quarantined at its first row."""
        records, issues = [], []
        origin = Path(self.file).name
        for anchor, group in self.anchors.items():
            if not group.positives:
                reason = "no row of this anchor has label 1: a training query needs a positive"
                issues.append(LineIssue(self.file, group.line, group.layout.label or group.layout.positive, reason))
                continue
            negatives = {t: s for t, s in group.negatives.items() if t not in group.positives}
            positive_ids = [registry.id_for_text(t, "", origin) for t in group.positives]
            negative_ids = [registry.id_for_text(t, "", origin) for t in negatives]
            records.append(
                TripletRecord(
                    registry.query_id_for_text(anchor),
                    anchor,
                    positive_ids,
                    negative_ids,
                    list(group.positives.values()) if group.scored else None,
                    list(negatives.values()) if group.scored else None,
                    None,
                    f"st:{group.layout.name}",
                    self.file,
                    group.line,
                )
            )
        return records, issues

    def parser(self, layout: StLayout) -> Parse:
        def parse(row: dict, registry: PassageRegistry, file: str, line: int) -> None:
            self.add(row, layout, line)

        return parse

    def json_parser(self) -> Parse:
        """A JSONL line is BGE, Tevatron or sentence-transformers by its own fields."""

        def parse(obj: dict, registry: PassageRegistry, file: str, line: int) -> TripletRecord | None:
            if "positive_passages" in obj or "pos" in obj:  # Tevatron or BGE
                return parse_json_record(obj, registry, file, line)
            layout, problems = st_layout(obj)
            if problems:
                column, reason = problems[0]
                more = [c for c, _ in problems[1:]]
                raise RowError(column, reason + (f" (also: {more})" if more else ""))
            if layout is None:
                return parse_json_record(obj, registry, file, line)  # raises: neither format
            self.add(obj, layout, line)
            return None

        return parse


def numbered_rows(frame: pl.DataFrame, columns: Iterable[str] | None = None):
    rows = frame.select(list(columns) if columns else frame.columns).iter_rows(named=True)
    return ((i, row, None) for i, row in enumerate(rows, start=1))


def frame_parser(frame: pl.DataFrame, file: str, groups: StGroups) -> tuple[Parse, Iterable] | list[LineIssue]:
    """How to read the rows of a Parquet file or dataset folder, by its columns: arhn's own, or a
    sentence-transformers layout; else the file's issues (row 0, the column named)."""
    if all(c in frame.columns for c in OWN_PARQUET_COLUMNS):
        return parse_parquet_row, numbered_rows(frame, OWN_PARQUET_COLUMNS)
    layout, problems = st_layout(frame.columns)
    if problems:
        return [LineIssue(file, 0, column, reason) for column, reason in problems]
    if layout is None:
        missing = [c for c in OWN_PARQUET_COLUMNS if c not in frame.columns]
        reason = f"missing columns {missing}; expected {list(OWN_PARQUET_COLUMNS)}, or: {ACCEPTED}"
        return [LineIssue(file, 0, "<file>", f"{reason} (columns present: {frame.columns[:8]})")]
    return groups.parser(layout), numbered_rows(frame)


def dataset_folder_problem(path: Path) -> str | None:
    """Why `path` is no readable `Dataset.save_to_disk` folder, or None. Cheap (the arrow files'
    schemas only, no `datasets` import), so the landing sensor probes with it too."""
    if (path / "dataset_dict.json").is_file():
        return "a DatasetDict folder: land one split, saved with dataset_dict['train'].save_to_disk(...)"
    missing = [name for name in DATASET_MARKERS if not (path / name).is_file()]
    if missing:
        return f"not a regular file, nor a datasets save_to_disk folder (no {' or '.join(missing)})"
    try:
        json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
        names = [
            entry["filename"] for entry in json.loads((path / "state.json").read_text(encoding="utf-8"))["_data_files"]
        ]
        for name in names:
            if Path(name).name != name:
                return f"state.json names a data file outside the folder: {name!r}"
            with pa.OSFile(str(path / name)) as source:
                pa.ipc.open_stream(source).schema  # noqa: B018 (reading it is the check)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # JSON and Arrow errors are ValueErrors
        return f"unreadable datasets folder: {type(exc).__name__}: {exc}"
    return None if names else "empty dataset: state.json lists no data file"


def read_dataset_folder(path: Path) -> pl.DataFrame | str:
    """The rows of a `Dataset.save_to_disk` folder, or why it cannot be read."""
    problem = dataset_folder_problem(path)
    if problem is not None:
        return problem
    try:
        import datasets  # heavy: imported only when a dataset folder has landed

        dataset = datasets.load_from_disk(str(path))
        return dataset.to_polars()
    except Exception as exc:  # datasets and pyarrow raise many kinds for a damaged folder
        return f"unreadable datasets folder: {type(exc).__name__}: {exc}"
