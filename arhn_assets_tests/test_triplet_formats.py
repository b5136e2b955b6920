from __future__ import annotations

import gzip
import json
import random
import zlib
from pathlib import Path

import polars as pl
import pytest

from arhn_assets.core.triplet_formats import (
    PassageRegistry,
    RowError,
    content_id,
    is_landed_file,
    read_landed_file,
)
from arhn_assets_tests.helpers.formats import bge, tevatron
from arhn_assets_tests.jsonl import jsonl_bytes

BGE_FILES = ["embedder_msmarco.jsonl", "embedder_nq.jsonl", "reranker_examples.jsonl"]
RLHN_STAGE_1 = "fiqa.stage_1.gpt-4o-mini.jsonl.gz"


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_bytes(jsonl_bytes(lines))
    return path


def read_one(path: Path, registry: PassageRegistry | None = None):
    records, issues = read_landed_file(path, registry if registry is not None else PassageRegistry())
    assert issues == []
    assert len(records) == 1
    return records[0]


def issue_keys(issues) -> list[tuple[str, int, str]]:
    return [(i.file, i.line, i.field) for i in issues]


def test_content_id_is_a_stable_short_hash():
    assert content_id("hello") == content_id("hello")
    assert content_id("hello") != content_id("hello!")
    assert content_id("hello").startswith("sha256:")
    assert len(content_id("hello")) == len("sha256:") + 24


def test_row_error_carries_field_and_reason():
    err = RowError("pos[2]", "empty passage")
    assert (err.field, err.reason, str(err)) == ("pos[2]", "empty passage", "pos[2]: empty passage")


def test_bge_line_gets_content_hash_ids_stable_across_registries(tmp_path):
    line = bge(
        "what lowers fever",
        ["Aspirin lowers fever."],
        ["Paris is in France.", "Sleep helps memory."],
        pos_scores=[0.9],
        neg_scores=[0.5, 3],
        prompt="Represent this query: ",
    )
    path = write_jsonl(tmp_path / "train.jsonl", [line])
    first, second = PassageRegistry(), PassageRegistry()
    a, b = read_one(path, first), read_one(path, second)

    assert a.positive_ids == [content_id("Aspirin lowers fever.")]
    assert a.provided_negative_ids == [content_id("Paris is in France."), content_id("Sleep helps memory.")]
    assert a.query_id == content_id("what lowers fever")
    assert (a.query_id, a.positive_ids, a.provided_negative_ids) == (
        b.query_id,
        b.positive_ids,
        b.provided_negative_ids,
    )
    assert a.query_text == "what lowers fever"
    assert a.positive_scores == [0.9]
    assert a.provided_negative_scores == [0.5, 3.0]
    assert a.query_prompt == "Represent this query: "
    assert (a.source, a.source_file, a.source_line) == ("bge", str(path), 1)
    assert first.texts[a.positive_ids[0]] == "Aspirin lowers fever."
    assert first.origin[a.positive_ids[0]] == "train.jsonl"
    assert set(first.texts) == set(second.texts) and len(first.texts) == 3


def test_bge_line_without_scores_or_prompt(tmp_path):
    rec = read_one(write_jsonl(tmp_path / "x.jsonl", [bge("q", ["p"])]))
    assert rec.provided_negative_ids == []
    assert rec.positive_scores is None and rec.provided_negative_scores is None
    assert rec.query_prompt is None


def test_same_text_in_two_rows_gets_one_id(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [bge("q1", ["shared passage"]), bge("q2", ["other"], ["shared passage"])])
    registry = PassageRegistry()
    records, issues = read_landed_file(path, registry)
    assert issues == []
    assert records[0].positive_ids[0] == records[1].provided_negative_ids[0]
    assert len(registry.texts) == 2


def test_tevatron_line_keeps_docids_and_registers_title_and_text(tmp_path):
    line = tevatron(
        9,
        "what lowers fever",
        [{"docid": "p1", "title": "Aspirin", "text": "Aspirin lowers fever."}],
        [
            {"docid": "n1", "title": "", "text": "Paris is in France."},
            {"title": "Sleep", "text": "Sleep helps memory."},
        ],
    )
    registry = PassageRegistry()
    rec = read_one(write_jsonl(tmp_path / "tev.jsonl", [line]), registry)
    assert rec.query_id == "9"
    assert rec.positive_ids == ["p1"]
    assert rec.provided_negative_ids == ["n1", content_id("Sleep Sleep helps memory.")]
    assert rec.source == "tevatron"
    assert rec.positive_scores is None and rec.query_prompt is None
    assert (registry.titles["p1"], registry.texts["p1"]) == ("Aspirin", "Aspirin lowers fever.")
    assert (registry.titles["n1"], registry.texts["n1"]) == ("", "Paris is in France.")
    assert registry.origin["p1"] == "tev.jsonl"


def test_tevatron_line_without_query_id_gets_a_content_id(tmp_path):
    line = {"query": "q text", "positive_passages": [{"docid": "p", "text": "t"}]}
    assert read_one(write_jsonl(tmp_path / "t.jsonl", [line])).query_id == content_id("q text")


def corpus_registry() -> PassageRegistry:
    corpus = pl.DataFrame(
        {"doc_id": ["c1", "c2"], "title": ["Aspirin", ""], "text": ["Aspirin lowers fever.", "Vitamin C and colds."]}
    )
    queries = pl.DataFrame({"query_id": ["Q1"], "text": ["what lowers fever"]})
    return PassageRegistry.from_corpus(corpus, queries)


def test_texts_equal_to_corpus_passages_get_corpus_ids(tmp_path):
    registry = corpus_registry()
    assert registry.origin == {"c1": "beir", "c2": "beir"}
    line = bge(
        "what lowers fever",
        ["Aspirin lowers fever."],  # the corpus text alone
        ["Aspirin Aspirin lowers fever.", "Vitamin C and colds.", "A new passage."],  # title + text, text, unknown
    )
    rec = read_one(write_jsonl(tmp_path / "x.jsonl", [line]), registry)
    assert rec.query_id == "Q1"
    assert rec.positive_ids == ["c1"]
    assert rec.provided_negative_ids == ["c1", "c2", content_id("A new passage.")]
    assert len(registry.texts) == 3


def test_tevatron_docid_known_from_corpus_keeps_corpus_text(tmp_path):
    registry = corpus_registry()
    line = tevatron("q", "query", [{"docid": "c2"}], [{"docid": "c1", "title": "Other", "text": "ignored"}])
    rec = read_one(write_jsonl(tmp_path / "t.jsonl", [line]), registry)
    assert (rec.positive_ids, rec.provided_negative_ids) == (["c2"], ["c1"])
    assert registry.texts["c1"] == "Aspirin lowers fever." and registry.origin["c1"] == "beir"


def write_own_parquet(path: Path, rows: list[dict]) -> Path:
    schema = {
        "query_id": pl.String,
        "query_text": pl.String,
        "positive_ids": pl.List(pl.String),
        "provided_negative_ids": pl.List(pl.String),
    }
    pl.DataFrame(rows, schema=schema).write_parquet(path)
    return path


def test_parquet_rows_resolve_against_known_ids(tmp_path):
    path = write_own_parquet(
        tmp_path / "own.parquet",
        [
            {"query_id": "a", "query_text": "first", "positive_ids": ["c1"], "provided_negative_ids": ["c2"]},
            {"query_id": "b", "query_text": "second", "positive_ids": ["nope"], "provided_negative_ids": []},
            {"query_id": "c", "query_text": "third", "positive_ids": ["c2"], "provided_negative_ids": ["c1", "zzz"]},
            {"query_id": "d", "query_text": "fourth", "positive_ids": ["c2"], "provided_negative_ids": None},
            {"query_id": "e", "query_text": "fifth", "positive_ids": [], "provided_negative_ids": []},
        ],
    )
    records, issues = read_landed_file(path, corpus_registry())
    assert [(r.query_id, r.query_text, r.positive_ids, r.provided_negative_ids) for r in records] == [
        ("a", "first", ["c1"], ["c2"]),
        ("d", "fourth", ["c2"], []),
    ]
    assert {r.source for r in records} == {"parquet"}
    assert [r.source_line for r in records] == [1, 4]
    file = str(path)
    assert issue_keys(issues) == [
        (file, 2, "positive_ids[0]"),
        (file, 3, "provided_negative_ids[1]"),
        (file, 5, "positive_ids"),
    ]
    assert "unknown doc id 'nope'" in issues[0].reason


QUARANTINE_LINES = [
    bge("valid bge", ["bge positive"], ["bge negative"]),  # 1
    '{"query": "broken", "pos": [',  # 2
    b'{"query": "caf\xe9", "pos": ["x"]}',  # 3 latin-1 byte: invalid UTF-8
    {"pos": ["missing query"]},  # 4
    bge("   ", ["empty query"]),  # 5
    bge("q", "not a list"),  # 6
    bge("q", []),  # 7
    bge("q", ["rejected positive"], ["rejected negative", 3]),  # 8
    bge("q", ["p8"], ["n8a", "n8b"], neg_scores=[1.0]),  # 9
    tevatron("t10", "q", [{"title": "", "text": ""}]),  # 10
    {"question": "neither format", "answers": []},  # 11
    tevatron("t12", "valid tevatron", [{"docid": "tp", "title": "T", "text": "tevatron positive"}], []),  # 12
    bge("q", ["p13"], prompt=7),  # 13
    bge("q", ["p14"], pos_scores=[float("nan")]),  # 14 (json.dumps writes NaN)
    tevatron("t15", "q", [{"docid": "zz"}]),  # 15 unknown docid without text
]

EXPECTED_FIELDS = {
    2: "<line>",
    3: "<line>",
    4: "query",
    5: "query",
    6: "pos",
    7: "pos",
    8: "neg[1]",
    9: "neg_scores",
    10: "positive_passages[0]",
    11: "<line>",
    13: "prompt",
    14: "pos_scores[0]",
    15: "positive_passages[0].docid",
}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_quarantine_cases_name_file_line_and_field(tmp_path, gz):
    path = write_jsonl(tmp_path / "mixed.jsonl", QUARANTINE_LINES)
    if gz:
        gz_path = tmp_path / "mixed.jsonl.gz"
        gz_path.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        path.unlink()
        path = gz_path
    registry = PassageRegistry()
    records, issues = read_landed_file(path, registry)

    # mixed BGE and Tevatron lines in one file are both accepted
    assert [(r.source, r.source_line, r.query_text) for r in records] == [
        ("bge", 1, "valid bge"),
        ("tevatron", 12, "valid tevatron"),
    ]
    assert issue_keys(issues) == [(str(path), line, name) for line, name in EXPECTED_FIELDS.items()]
    reasons = {i.line: i.reason for i in issues}
    assert reasons[4] == "missing"
    assert reasons[5] == "empty"
    assert "expected a list" in reasons[6]
    assert "empty list" in reasons[7]
    assert "neither docid nor text" in reasons[10]
    assert "neither a BGE line" in reasons[11] and "question" in reasons[11]
    # rejected rows left nothing behind: only the two valid rows' passages are known
    assert sorted(registry.texts.values()) == ["bge negative", "bge positive", "tevatron positive"]


def test_rejected_row_is_rolled_back_from_the_registry(tmp_path):
    lines = [
        bge("kept", ["shared"]),
        bge("rejected", ["shared", "new positive"], ["new negative"], neg_scores=[0.1, 0.2]),
        tevatron("t", "rejected too", [{"docid": "d-new", "title": "T", "text": "tev text"}, {"docid": "d-bad"}]),
    ]
    registry = PassageRegistry()
    records, issues = read_landed_file(write_jsonl(tmp_path / "x.jsonl", lines), registry)
    assert [r.query_text for r in records] == ["kept"]
    assert [i.field for i in issues] == ["neg_scores", "positive_passages[1].docid"]
    shared = content_id("shared")
    assert registry.texts == {shared: "shared"}
    assert registry.added == [shared]
    assert registry.id_by_text == {"shared": shared}
    assert set(registry.titles) == set(registry.origin) == {shared}


def test_rollback_keeps_mappings_of_earlier_passages():
    registry = PassageRegistry()
    registry.add("a", "", "same text", "f")
    mark = len(registry.added)
    registry.add("b", "Title", "same text", "f")
    registry.add("a", "", "ignored: id already known", "f")
    assert registry.added == ["a", "b"]
    registry.rollback(mark)
    assert registry.texts == {"a": "same text"}
    assert registry.id_by_text == {"same text": "a"}
    assert registry.id_for_text("same text", "", "f") == "a"


def test_truncated_gzip_keeps_lines_before_the_break(tmp_path):
    rng = random.Random(0)
    lines = [json.dumps(bge(f"query {i}", ["".join(rng.choice("abcdefgh ") for _ in range(300))])) for i in range(300)]
    data = gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0)
    cut = data[: len(data) // 2]
    complete_lines = zlib.decompressobj(31).decompress(cut).count(b"\n")
    assert complete_lines > 100  # the break is well past the first read buffer
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(cut)

    records, issues = read_landed_file(path, PassageRegistry())
    assert [r.query_text for r in records] == [f"query {i}" for i in range(complete_lines)]
    assert issue_keys(issues) == [(str(path), complete_lines + 1, "<file>")]
    assert "EOFError" in issues[0].reason


def test_directory_named_like_a_landed_file(tmp_path):
    folder = tmp_path / "x.jsonl"
    folder.mkdir()
    records, issues = read_landed_file(folder, PassageRegistry())
    assert records == []
    assert issue_keys(issues) == [(str(folder), 0, "<file>")]


def test_garbage_parquet_is_one_file_issue(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all\n" * 10)
    records, issues = read_landed_file(path, PassageRegistry())
    assert records == []
    assert issue_keys(issues) == [(str(path), 0, "<file>")]
    assert issues[0].reason.startswith("unreadable Parquet")


def test_parquet_missing_columns_is_one_file_issue(tmp_path):
    path = tmp_path / "cols.parquet"
    pl.DataFrame({"query_id": ["a"], "query": ["text"], "pos": [["c1"]]}).write_parquet(path)
    records, issues = read_landed_file(path, corpus_registry())
    assert records == []
    assert issue_keys(issues) == [(str(path), 0, "<file>")]
    assert "query_text" in issues[0].reason and "positive_ids" in issues[0].reason


@pytest.mark.parametrize(
    ("name", "landed"),
    [
        ("a.jsonl", True),
        ("a.jsonl.gz", True),
        ("a.parquet", True),
        (".a.jsonl", False),
        (".a.parquet", False),
        ("a.json", False),
        ("a.jsonl.tmp", False),
        ("README.md", False),
    ],
)
def test_is_landed_file(name, landed):
    assert is_landed_file(Path(name)) is landed


def test_every_visible_folder_is_landed_for_ingest_to_read_or_name(tmp_path):
    for name in ("mined", "x.jsonl", ".mined"):
        (tmp_path / name).mkdir()
    assert [is_landed_file(tmp_path / n) for n in ("mined", "x.jsonl", ".mined")] == [True, True, False]


def read_raw_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.parametrize("name", BGE_FILES)
def test_real_bge_examples_parse_cleanly(shared_data, name):
    path = shared_data / "bge_examples" / name
    raw = read_raw_jsonl(path)
    registry = PassageRegistry()
    records, issues = read_landed_file(path, registry)
    assert issues == []
    assert len(records) == len(raw) == 10
    for record, line in zip(records, raw, strict=True):
        assert record.source == "bge"
        assert record.query_text == line["query"]
        assert [registry.texts[i] for i in record.positive_ids] == line["pos"]
        assert [registry.texts[i] for i in record.provided_negative_ids] == line["neg"]
        assert record.positive_scores == pytest.approx(line["pos_scores"])
        assert record.provided_negative_scores == pytest.approx(line["neg_scores"])
        assert record.query_prompt == line.get("prompt")


def test_real_rlhn_stage_1_parses_cleanly(shared_data):
    path = shared_data / "rlhn_llm_judgments" / RLHN_STAGE_1
    raw = read_raw_jsonl(path)
    registry = PassageRegistry()
    records, issues = read_landed_file(path, registry)
    assert issues == []
    assert len(records) == len(raw) == 25
    for record, line in zip(records, raw, strict=True):
        assert record.source == "tevatron"
        assert record.query_id == line["query_id"]
        assert record.positive_ids == [p["docid"] for p in line["positive_passages"]]
        assert record.provided_negative_ids == [p["docid"] for p in line["negative_passages"]]
        assert len(record.positive_ids) >= 1
        assert len(record.provided_negative_ids) == 15
        first = line["positive_passages"][0]
        assert registry.texts[first["docid"]] == first["text"]
    # the README says "1 pos + 15 negs per query"; the file has 1 to 15 positives per query
    assert {len(r.positive_ids) for r in records} == {len(line["positive_passages"]) for line in raw}
