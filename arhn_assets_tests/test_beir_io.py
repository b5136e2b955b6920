from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from arhn_assets.core.beir_io import (
    DatasetNotFound,
    LineIssue,
    find_dataset_dir,
    iter_jsonl,
    load_beir_dataset,
    read_qrels,
)
from arhn_assets_tests.jsonl import jsonl_bytes

QRELS_HEADER = "query-id\tcorpus-id\tscore\n"


def write_beir(
    root: Path,
    corpus: list,
    queries: list,
    qrels: dict[str, list[tuple]] | None = None,
    gz: bool = False,
) -> Path:
    """A small BEIR folder: corpus.jsonl[.gz], queries.jsonl and qrels/<split>.tsv."""
    root.mkdir(parents=True)
    data = jsonl_bytes(corpus)
    if gz:
        (root / "corpus.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
    else:
        (root / "corpus.jsonl").write_bytes(data)
    (root / "queries.jsonl").write_bytes(jsonl_bytes(queries))
    (root / "qrels").mkdir()
    for split, pairs in (qrels or {}).items():
        body = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in pairs)
        (root / "qrels" / f"{split}.tsv").write_text(QRELS_HEADER + body, encoding="utf-8")
    return root


def small_dataset(root: Path, gz: bool = False, splits: tuple[str, ...] = ("train", "test")) -> Path:
    corpus = [
        {"_id": "d1", "title": "Aspirin", "text": "Aspirin lowers fever."},
        {"_id": "d2", "title": "", "text": "Vitamin C and colds."},
        {"_id": "d3", "title": "Sleep", "text": "Sleep helps memory.", "metadata": {"year": 2020}},
    ]
    queries = [
        {"_id": "q1", "text": "does aspirin reduce fever", "metadata": {}},
        {"_id": "q2", "text": "vitamin c colds"},
    ]
    pairs = [("q1", "d1", 1), ("q2", "d2", 1), ("q2", "d3", 0)]
    return write_beir(root, corpus, queries, {split: pairs for split in splits}, gz=gz)


def issue_keys(issues: list[LineIssue]) -> list[tuple[str, int, str]]:
    return [(i.file, i.line, i.field) for i in issues]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_load_valid_dataset(tmp_path, gz):
    root = small_dataset(tmp_path / "tiny", gz=gz)
    ds = load_beir_dataset("tiny", [root], download=False)
    assert ds.name == "tiny"
    assert ds.root == root
    assert ds.issues == []
    assert ds.corpus.columns == ["doc_id", "title", "text"]
    assert ds.corpus.rows() == [
        ("d1", "Aspirin", "Aspirin lowers fever."),
        ("d2", "", "Vitamin C and colds."),
        ("d3", "Sleep", "Sleep helps memory."),
    ]
    assert ds.queries.rows() == [("q1", "does aspirin reduce fever"), ("q2", "vitamin c colds")]
    assert ds.available_splits() == ["test", "train"]
    assert ds.training_split() == "train"
    qrels = ds.qrels("train")
    assert qrels.columns == ["query_id", "doc_id", "score"]
    assert qrels.rows() == [("q1", "d1", 1), ("q2", "d2", 1), ("q2", "d3", 0)]


def test_gzipped_corpus_is_found_when_plain_is_absent(tmp_path):
    root = small_dataset(tmp_path / "tiny", gz=True)
    assert not (root / "corpus.jsonl").exists()
    assert load_beir_dataset("tiny", [root], download=False).corpus.height == 3


BAD_CORPUS = [
    {"_id": "d1", "title": "T", "text": "first valid"},  # 1
    '{"_id": "d2", "text": "no closing brace"',  # 2 invalid JSON
    b'{"_id": "d3", "text": "caf\xff"}',  # 3 invalid UTF-8
    {"title": "no id", "text": "orphan"},  # 4 missing _id
    {"_id": "d1", "text": "duplicate of line 1"},  # 5 duplicate _id
    {"_id": "d6", "text": 42},  # 6 non-string text
    {"_id": "d7", "title": "", "text": "   "},  # 7 empty text
    ["_id", "d8"],  # 8 a JSON array, not an object
    "",  # 9 blank: skipped, not an issue
    {"_id": "d10", "title": 5, "text": "bad title"},  # 10 non-string title
    {"_id": "d11", "text": "last valid"},  # 11
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_bad_corpus_lines_are_reported_and_valid_lines_kept(tmp_path, gz):
    root = write_beir(tmp_path / "bad", BAD_CORPUS, [{"_id": "q1", "text": "q"}], {"train": [("q1", "d1", 1)]}, gz=gz)
    corpus_file = str(root / ("corpus.jsonl.gz" if gz else "corpus.jsonl"))
    ds = load_beir_dataset("bad", [root], download=False)

    assert ds.corpus["doc_id"].to_list() == ["d1", "d11"]
    assert ds.corpus.filter(ds.corpus["doc_id"] == "d1")["text"].item() == "first valid"
    assert issue_keys(ds.issues) == [
        (corpus_file, 2, "<line>"),
        (corpus_file, 3, "<line>"),
        (corpus_file, 4, "_id"),
        (corpus_file, 5, "_id"),
        (corpus_file, 6, "text"),
        (corpus_file, 7, "text"),
        (corpus_file, 8, "<line>"),
        (corpus_file, 10, "title"),
    ]
    reasons = {i.line: i.reason for i in ds.issues}
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3].startswith("invalid UTF-8")
    assert "duplicate id 'd1'" in reasons[5]
    assert "int" in reasons[6]
    assert reasons[7] == "empty text"
    assert "list" in reasons[8]


def test_bad_query_lines_are_reported_against_queries_file(tmp_path):
    queries = [
        {"_id": "q1", "text": "ok"},
        {"_id": "q2"},
        {"_id": "q1", "text": "again"},
        {"_id": "q4", "text": "fine"},
    ]
    root = write_beir(tmp_path / "bq", [{"_id": "d1", "text": "x"}], queries, {"train": [("q1", "d1", 1)]})
    ds = load_beir_dataset("bq", [root], download=False)
    assert ds.queries["query_id"].to_list() == ["q1", "q4"]
    queries_file = str(root / "queries.jsonl")
    assert issue_keys(ds.issues) == [(queries_file, 2, "text"), (queries_file, 3, "_id")]


def test_utf8_bom_and_crlf_line_endings_are_tolerated(tmp_path):
    root = tmp_path / "crlf"
    root.mkdir()
    corpus = jsonl_bytes([{"_id": "a", "title": "Ä", "text": "first"}, {"_id": "b", "text": "second"}], newline=b"\r\n")
    (root / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf" + corpus)
    queries = jsonl_bytes([{"_id": "q", "text": "question"}], newline=b"\r\n")
    (root / "queries.jsonl").write_bytes(b"\xef\xbb\xbf" + queries)
    (root / "qrels").mkdir()
    (root / "qrels" / "train.tsv").write_bytes(b"query-id\tcorpus-id\tscore\r\nq\ta\t1\r\nq\tb\t2\r\n")

    ds = load_beir_dataset("crlf", [root], download=False)
    assert ds.issues == []
    assert ds.corpus.rows() == [("a", "Ä", "first"), ("b", "", "second")]
    assert ds.queries.rows() == [("q", "question")]
    assert ds.qrels("train").rows() == [("q", "a", 1), ("q", "b", 2)]


def test_bom_only_stripped_on_first_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\xef\xbb\xbf{"a": 2}\n')
    results = list(iter_jsonl(path))
    assert results[0] == (1, {"a": 1}, None)
    assert results[1][0] == 2 and results[1][1] is None
    assert results[1][2].field == "<line>"


def test_integer_ids_are_accepted_as_strings(tmp_path):
    corpus = [{"_id": 7, "text": "seven"}, {"_id": True, "text": "a boolean is not an id"}]
    root = write_beir(tmp_path / "ints", corpus, [{"_id": 1, "text": "one"}], {"train": [(1, 7, 1)]})
    ds = load_beir_dataset("ints", [root], download=False)
    assert ds.corpus.rows() == [("7", "", "seven")]
    assert ds.queries.rows() == [("1", "one")]
    assert issue_keys(ds.issues) == [(str(root / "corpus.jsonl"), 2, "_id")]
    assert ds.qrels("train").rows() == [("1", "7", 1)]


def test_training_split_falls_back_to_dev(tmp_path):
    ds = load_beir_dataset("devonly", [small_dataset(tmp_path / "devonly", splits=("dev", "test"))], download=False)
    assert ds.available_splits() == ["dev", "test"]
    assert ds.training_split() == "dev"


def test_training_split_prefers_train_over_dev(tmp_path):
    ds = load_beir_dataset("both", [small_dataset(tmp_path / "both", splits=("dev", "train"))], download=False)
    assert ds.training_split() == "train"


def test_no_train_or_dev_split_names_the_qrels_folder(tmp_path):
    root = small_dataset(tmp_path / "testonly", splits=("test",))
    ds = load_beir_dataset("testonly", [root], download=False)
    with pytest.raises(DatasetNotFound) as info:
        ds.training_split()
    message = str(info.value)
    assert str(root / "qrels") in message
    assert "train.tsv" in message and "dev.tsv" in message


def test_missing_qrels_file_raises_dataset_not_found(tmp_path):
    with pytest.raises(DatasetNotFound, match="does not exist"):
        read_qrels(tmp_path / "qrels" / "train.tsv")


def test_folder_without_corpus_raises_dataset_not_found(tmp_path):
    root = small_dataset(tmp_path / "nocorpus")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(DatasetNotFound, match="no corpus.jsonl"):
        load_beir_dataset("nocorpus", [root], download=False)


def test_first_candidate_with_queries_wins(tmp_path):
    first, second = tmp_path / "a" / "ds", tmp_path / "b" / "ds"
    small_dataset(second)
    assert find_dataset_dir("ds", [first, second], download=False) == second
    small_dataset(first)
    assert find_dataset_dir("ds", [first, second], download=False) == first


def assert_guidance(message: str, candidates: list[Path]) -> None:
    for candidate in candidates:
        assert str(candidate) in message
    for needed in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        assert needed in message


def test_missing_dataset_without_download_explains_what_to_create(tmp_path):
    candidates = [tmp_path / "data" / "nothere", tmp_path / "home" / "datasets" / "nothere"]
    with pytest.raises(DatasetNotFound) as info:
        load_beir_dataset("nothere", candidates, download=False)
    assert_guidance(str(info.value), candidates)
    assert "download disabled" in str(info.value)
    assert not (tmp_path / "home").exists()


def test_failed_download_of_unknown_dataset_gives_the_same_guidance(tmp_path):
    name = "arhn-no-such-dataset"
    candidates = [tmp_path / "data" / name, tmp_path / "home" / "datasets" / name]
    with pytest.raises(DatasetNotFound) as info:
        load_beir_dataset(name, candidates, download=True)
    assert_guidance(str(info.value), candidates)
    assert "could not be downloaded" in str(info.value)
    assert not candidates[-1].exists()


def test_real_scifact_loads_cleanly(shared_data):
    ds = load_beir_dataset("scifact", [shared_data / "scifact"], download=False)
    assert ds.issues == []
    assert ds.corpus.height == 5183
    assert ds.corpus["doc_id"].n_unique() == 5183
    assert ds.queries.height == 1109
    assert ds.available_splits() == ["test", "train"]
    assert ds.training_split() == "train"
    train, test = ds.qrels("train"), ds.qrels("test")
    assert train.height == 919
    assert test.height == 339
    assert train["query_id"].n_unique() == 809
    assert set(train["doc_id"]) <= set(ds.corpus["doc_id"])
    assert set(train["query_id"]) <= set(ds.queries["query_id"])
