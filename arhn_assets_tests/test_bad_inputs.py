"""A corpus of broken landed files, each landed next to a good one.

Every bad row or file gets a quarantine row naming its file, line and field; every valid row is
kept; a file with no valid row fails the ingest by name; and a failed ingest leaves the
partition's triplets and passages exactly as they were (only the quarantine is rewritten)."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from arhn_assets.cli import failure_message, pipeline_job
from arhn_assets.core.ingest import IngestConfig, ingest
from arhn_assets.core.paths import ArhnPaths
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.formats import bge, tevatron
from arhn_assets_tests.jsonl import jsonl_bytes

GOOD_FILE = "0-good.jsonl"  # sorts first, so its queries are the first seen of any duplicate
GOOD = [
    bge("good query one", ["good positive one"], ["good negative one"]),
    tevatron("good-2", "good query two", [{"docid": "g2", "title": "", "text": "good positive two"}]),
]
HUGE_TEXT = "very long passage " * 300_000  # a 5.4 MB line


def parquet_bytes(rows: list[dict]) -> bytes:
    schema = {
        "query_id": pl.String,
        "query_text": pl.String,
        "positive_ids": pl.List(pl.String),
        "provided_negative_ids": pl.List(pl.String),
    }
    buffer = io.BytesIO()
    pl.DataFrame(rows, schema=schema).write_parquet(buffer)
    return buffer.getvalue()


def frame_bytes(columns: dict) -> bytes:
    """Any columns as Parquet bytes (a sentence-transformers layout, say)."""
    buffer = io.BytesIO()
    pl.DataFrame(columns).write_parquet(buffer)
    return buffer.getvalue()


def truncated_gzip(lines: int) -> bytes:
    whole = gzip.compress(
        jsonl_bytes([bge(f"gzip query {i}", [f"gzip positive {i} " * 40]) for i in range(lines)]), mtime=0
    )
    return whole[: len(whole) // 2]


@dataclass(frozen=True)
class BrokenInput:
    name: str
    content: bytes | None  # None: a directory with the file's name
    issues: list[tuple[int | None, str, str]]  # (line or None for "some line", field, reason fragment)
    kept: list[str] = field(default_factory=list)  # query texts of the rows it still contributes


VALID_BUT_REFUSED_NAME = jsonl_bytes([bge("never read", ["never read positive"])])

BROKEN = [
    BrokenInput(
        "truncated-json.jsonl",
        jsonl_bytes([bge("before the cut", ["p1"])]) + b'{"query": "cut", "pos": ["ha',
        [(2, "<line>", "invalid JSON")],
        ["before the cut"],
    ),
    BrokenInput(
        "invalid-utf8.jsonl",
        jsonl_bytes([bge("utf8 ok", ["p2"]), b'{"query": "caf\xe9", "pos": ["x"]}']),
        [(2, "<line>", "invalid UTF-8")],
        ["utf8 ok"],
    ),
    BrokenInput(
        "bom.jsonl",
        b"\xef\xbb\xbf" + jsonl_bytes([bge("after a bom", ["p3"]), "\ufeff" + '{"query": "bom again"}']),
        [(2, "<line>", "BOM")],
        ["after a bom"],
    ),
    BrokenInput(
        "crlf.jsonl",
        jsonl_bytes([bge("crlf one", ["p4"]), bge("crlf two", ["p5"])], newline=b"\r\n"),
        [],
        ["crlf one", "crlf two"],
    ),
    BrokenInput(
        "huge-lines.jsonl",
        jsonl_bytes([bge("huge but valid", [HUGE_TEXT]), "{" + HUGE_TEXT]),
        [(2, "<line>", "invalid JSON")],
        ["huge but valid"],
    ),
    BrokenInput(
        "wrong-types.jsonl",
        jsonl_bytes(
            [
                {"query": 5, "pos": ["x"]},
                bge("q", "a string"),
                bge("q2", ["p"], [3]),
                bge("q3", ["p"], pos_scores=["high"]),
                tevatron(["a", "list"], "q4", [{"docid": "d", "text": "t"}]),
                bge("typed fine", ["p6"]),
            ]
        ),
        [
            (1, "query", "expected a string"),
            (2, "pos", "expected a list"),
            (3, "neg[0]", "expected a passage string"),
            (4, "pos_scores[0]", "expected a finite number"),
            (5, "query_id", "expected a string or integer id"),
        ],
        ["typed fine"],
    ),
    BrokenInput(
        "empty-texts.jsonl",
        jsonl_bytes(
            [
                bge("", ["p"]),
                bge("q", [""]),
                bge("q", ["p"], ["  "]),
                tevatron("t", "q", [{"docid": "", "title": "", "text": ""}]),
                bge("has text", ["p7"]),
            ]
        ),
        [
            (1, "query", "empty"),
            (2, "pos[0]", "empty passage"),
            (3, "neg[0]", "empty passage"),
            (4, "positive_passages[0]", "neither docid nor text"),
        ],
        ["has text"],
    ),
    BrokenInput(
        "duplicate-ids.jsonl",
        jsonl_bytes(
            [
                bge("good query one", ["a passage only this duplicate row brings"]),
                tevatron("dup", "first dup", [{"docid": "d1", "text": "dup text"}]),
                tevatron("dup", "second dup", [{"docid": "d2", "text": "second dup text"}]),
            ]
        ),
        [(1, "query_id", "duplicate query"), (3, "query_id", "duplicate query")],
        ["first dup"],
    ),
    BrokenInput(
        "ids-missing.parquet",
        parquet_bytes(
            [
                {"query_id": "pq1", "query_text": "parquet ok", "positive_ids": ["g2"], "provided_negative_ids": []},
                {
                    "query_id": "pq2",
                    "query_text": "unknown positive",
                    "positive_ids": ["nope"],
                    "provided_negative_ids": [],
                },
                {
                    "query_id": "pq3",
                    "query_text": "unknown negative",
                    "positive_ids": ["g2"],
                    "provided_negative_ids": ["gone"],
                },
                {"query_id": "pq4", "query_text": None, "positive_ids": ["g2"], "provided_negative_ids": []},
            ]
        ),
        [
            (2, "positive_ids[0]", "unknown doc id 'nope'"),
            (3, "provided_negative_ids[0]", "unknown doc id 'gone'"),
            (4, "query_text", "missing"),
        ],
        ["parquet ok"],
    ),
    BrokenInput(
        "mixed-formats.jsonl",
        jsonl_bytes(
            [
                bge("bge in mixed", ["p8"]),
                tevatron("m2", "tevatron in mixed", [{"docid": "m2p", "text": "tevatron text"}]),
                "[1, 2]",
                "query,pos",
                {"question": "squad style", "answers": []},
                tevatron("m6", "unknown docid", [{"docid": "not-anywhere"}]),
            ]
        ),
        [
            (3, "<line>", "expected a JSON object"),
            (4, "<line>", "invalid JSON"),
            (5, "<line>", "neither a BGE line"),
            (6, "positive_passages[0].docid", "unknown doc id"),
        ],
        ["bge in mixed", "tevatron in mixed"],
    ),
    BrokenInput(
        "truncated.jsonl.gz", truncated_gzip(200), [(None, "<file>", "unreadable from here on")], ["gzip query 0"]
    ),
    BrokenInput("garbage.parquet", b"PAR1 this is not parquet", [(0, "<file>", "unreadable Parquet")]),
    BrokenInput("empty.jsonl", b"", [(0, "<file>", "empty file")]),
    BrokenInput("blank-lines.jsonl", b"\n \r\n\t\n", [(0, "<file>", "empty file")]),
    BrokenInput("a-directory.jsonl", None, [(0, "<file>", "not a regular file")]),
    BrokenInput(
        "st-unknown-column.parquet",
        frame_bytes({"anchor": ["st a"], "positive": ["st p"], "negative": ["st n"], "hardness": [3]}),
        [(0, "hardness", "unknown column 'hardness'")],
    ),
    BrokenInput(
        "st-labels.jsonl",
        jsonl_bytes(
            [
                {"query": "st labeled ok", "answer": "st positive", "label": 1},
                {"query": "st labeled ok", "answer": "st negative", "label": 0},
                {"query": "st bad label", "answer": "st x", "label": "yes"},
                {"anchor": "st extra", "positive": "st y", "weird": 1},
            ]
        ),
        [(3, "label", "expected a number"), (4, "weird", "unknown column 'weird'")],
        ["st labeled ok"],
    ),
    BrokenInput("not-a-dataset", None, [(0, "<file>", "nor a datasets save_to_disk folder")]),
    *[
        BrokenInput(name, VALID_BUT_REFUSED_NAME, [(0, "<file name>", "refused file name")])
        for name in ("quote's.jsonl", "with space.jsonl", "x';DROP TABLE t;--.jsonl", "données.jsonl", "-dash.jsonl")
    ],
]


def land(paths: ArhnPaths, dataset: str, name: str, content: bytes | None) -> Path:
    path = paths.landing_dir(dataset) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


def assert_named(quarantine: pl.DataFrame, path: Path, broken: BrokenInput) -> None:
    rows = quarantine.filter(pl.col("file") == str(path)).sort("line").select("line", "field", "reason").rows()
    assert len(rows) == len(broken.issues), rows
    for (line, field_name, reason), (want_line, want_field, fragment) in zip(rows, broken.issues):
        assert (field_name, fragment in reason) == (want_field, True), (line, field_name, reason)
        assert want_line is None or line == want_line, (line, field_name, reason)


@pytest.mark.parametrize("broken", BROKEN, ids=[b.name for b in BROKEN])
def test_each_broken_input_is_named_and_costs_only_its_own_rows(tmp_path, broken):
    paths = ArhnPaths(home=tmp_path / "home", data_dir=tmp_path / "no-beir")
    land(paths, "landed", GOOD_FILE, jsonl_bytes(GOOD))
    path = land(paths, "landed", broken.name, broken.content)

    result = ingest("landed", paths, IngestConfig(download=False))

    assert_named(result.quarantine, path, broken)
    assert result.quarantine.filter(pl.col("file") != str(path)).is_empty()
    kept = result.triplets["query_text"].to_list()
    assert kept[:2] == ["good query one", "good query two"]
    if broken.name.endswith(".gz"):  # the lines before the cut: test_a_truncated_gzip_keeps_every_line_before_the_break
        assert kept[2] == broken.kept[0]
    else:
        assert kept[2:] == broken.kept
    # Passages are exactly those of kept rows: a rejected row leaves none behind.
    referenced = set(
        result.triplets.select(pl.concat_list("positive_ids", "provided_negative_ids").alias("ids")).explode("ids")[
            "ids"
        ]
    )
    assert set(result.passages["doc_id"]) == referenced
    if broken.kept:
        assert result.failure_summary() is None
    else:
        assert result.files_without_valid_rows == [str(path)]
        assert str(path) in result.failure_summary() and GOOD_FILE not in result.failure_summary()


def test_a_truncated_gzip_keeps_every_line_before_the_break(tmp_path):
    paths = ArhnPaths(home=tmp_path / "home", data_dir=tmp_path / "no-beir")
    path = land(paths, "gz", "cut.jsonl.gz", truncated_gzip(200))
    result = ingest("gz", paths, IngestConfig(download=False))
    [(line,)] = result.quarantine.select("line").rows()
    assert result.triplets["query_text"].to_list() == [f"gzip query {i}" for i in range(line - 1)]
    assert 50 < line < 200 and result.quarantine["file"].to_list() == [str(path)]


def partition_digests(home: Path, dataset: str) -> dict[str, str]:
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((home / "lake").glob(f"*/dataset={dataset}/*"))
        if "quarantine" not in p.parts[-3]
    }


def test_a_partition_survives_every_broken_input_at_once(lake_home):
    """Dagster end to end: all the broken files land on an ingested partition. The run fails
    naming each file with no valid row, the quarantine names every bad row, and the triplets and
    passages stay byte for byte; once those files are removed, every valid row is ingested."""
    paths = ArhnPaths.from_env()
    job = pipeline_job(defs(), "group:ingest")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["landed"])
        land(paths, "landed", GOOD_FILE, jsonl_bytes(GOOD))
        assert job.execute_in_process(partition_key="landed", instance=instance).success
        before = partition_digests(lake_home, "landed")
        assert len(before) == 2  # raw_triplets and raw_passages

        landed = {b.name: land(paths, "landed", b.name, b.content) for b in BROKEN}
        failed = job.execute_in_process(partition_key="landed", instance=instance, raise_on_error=False)
        assert not failed.success
        message = failure_message(next(e for e in failed.all_events if e.is_step_failure))
        hopeless = [b for b in BROKEN if not b.kept]
        assert f"{len(hopeless)} landed file(s) of dataset 'landed' have no valid row" in message
        for broken in hopeless:
            assert str(landed[broken.name]) in message
        assert partition_digests(lake_home, "landed") == before

        quarantine = pl.read_parquet(lake_home / "lake" / "raw_triplets_quarantine" / "dataset=landed")
        for broken in BROKEN:
            assert_named(quarantine, landed[broken.name], broken)
        assert quarantine.height == sum(len(b.issues) for b in BROKEN)

        for broken in hopeless:
            path = landed[broken.name]
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        assert job.execute_in_process(partition_key="landed", instance=instance).success
        triplets = pl.read_parquet(lake_home / "lake" / "raw_triplets" / "dataset=landed")
        kept = triplets["query_text"].to_list()
        assert kept[:2] == ["good query one", "good query two"]
        assert {q for b in BROKEN for q in b.kept} <= set(kept) and triplets["query_id"].is_unique().all()
