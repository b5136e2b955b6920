from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from arhn_assets.core.beir_io import DatasetNotFound
from arhn_assets.core.ingest import IngestConfig, IngestResult, ingest, landed_files
from arhn_assets.core.paths import ArhnPaths, InvalidDatasetKey
from arhn_assets.core.sampling import QuerySample
from arhn_assets.core.triplet_formats import content_id

RLHN_STAGE_1 = "fiqa.stage_1.gpt-4o-mini.jsonl.gz"
RLHN_STAGE_2 = "fiqa.stage_2.gpt-4o.jsonl.gz"


def land(paths: ArhnPaths, dataset: str, source: Path, name: str | None = None) -> Path:
    """Copy `source` into the dataset's landing folder, as a user would."""
    target = paths.landing_dir(dataset) / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def write_landed(paths: ArhnPaths, dataset: str, name: str, lines: list) -> Path:
    target = paths.landing_dir(dataset) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return target


def positives_from_qrels(path: Path) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                grouped.setdefault(row["query-id"], []).append(row["corpus-id"])
    return grouped


def ids_are_known(result: IngestResult) -> None:
    known = set(result.passages["doc_id"])
    for column in ("positive_ids", "provided_negative_ids"):
        assert set(result.triplets[column].explode().drop_nulls()) <= known


@pytest.fixture(scope="module")
def scifact_result(tmp_path_factory, shared_data) -> IngestResult:
    paths = ArhnPaths(home=tmp_path_factory.mktemp("scifact") / "home", data_dir=shared_data)
    return ingest("scifact", paths, IngestConfig(download=False))


def test_scifact_ingest_builds_one_row_per_training_query(scifact_result, shared_data):
    result = scifact_result
    assert result.dataset == "scifact"
    assert result.triplets.height == 809
    assert result.sources == {"beir:train": 809}
    assert result.training_split == "train"
    assert result.quarantine.is_empty()
    assert result.files_without_valid_rows == []
    assert result.failure_summary() is None
    assert set(result.triplets["dataset"]) == {"scifact"}
    assert set(result.triplets["source_file"]) == {str(shared_data / "scifact" / "qrels" / "train.tsv")}

    expected = positives_from_qrels(shared_data / "scifact" / "qrels" / "train.tsv")
    got = dict(zip(result.triplets["query_id"], result.triplets["positive_ids"].to_list(), strict=True))
    assert {q: sorted(d) for q, d in got.items()} == {q: sorted(d) for q, d in expected.items()}
    assert sum(len(d) for d in got.values()) == 919
    assert result.triplets["provided_negative_ids"].list.len().sum() == 0

    assert result.passages.height == 5183
    assert set(result.passages["origin"]) == {"beir"}
    ids_are_known(result)

    with (shared_data / "scifact" / "queries.jsonl").open(encoding="utf-8") as handle:
        query_text = {q["_id"]: q["text"] for q in map(json.loads, handle)}
    assert all(query_text[q] == t for q, t in result.triplets.select("query_id", "query_text").iter_rows())


def test_max_queries_caps_rows(arhn_paths, scifact_result):
    result = ingest("scifact", arhn_paths, IngestConfig(download=False), QuerySample(7))
    assert result.triplets.height == 7
    assert result.triplets["query_id"].to_list() == scifact_result.triplets["query_id"].head(7).to_list()
    assert result.sources == {"beir:train": 7}


def test_landed_file_without_beir_folder(arhn_paths, shared_data):
    landed = land(arhn_paths, "fiqa-sample", shared_data / "rlhn_llm_judgments" / RLHN_STAGE_1)
    result = ingest("fiqa-sample", arhn_paths)  # download allowed, but landed files never download
    assert not (arhn_paths.home / "datasets").exists()
    assert result.triplets.height == 25
    assert result.sources == {"tevatron": 25}
    assert result.training_split is None
    assert result.quarantine.is_empty()
    assert result.failure_summary() is None
    assert set(result.triplets["source_file"]) == {str(landed)}
    assert set(result.passages["origin"]) == {RLHN_STAGE_1}
    ids_are_known(result)


def test_landed_files_take_precedence_over_beir(arhn_paths, shared_data):
    land(arhn_paths, "scifact", shared_data / "rlhn_llm_judgments" / RLHN_STAGE_1)
    result = ingest("scifact", arhn_paths, IngestConfig(download=False))
    assert result.sources == {"tevatron": 25}
    assert result.training_split is None
    origins = dict(result.passages.group_by("origin").len().iter_rows())
    assert origins["beir"] == 5183  # the BEIR corpus is still the dataset's passage table
    assert origins[RLHN_STAGE_1] > 0
    ids_are_known(result)


def test_beir_folder_of_same_name_supplies_corpus_ids(arhn_paths, shared_data):
    bge_file = shared_data / "bge_examples" / "embedder_msmarco.jsonl"
    first = json.loads(bge_file.read_text(encoding="utf-8").splitlines()[0])
    root = arhn_paths.home / "datasets" / "msmarco-mini"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "MS-1", "title": "", "text": first["pos"][0]}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "Q-1", "text": first["query"]}) + "\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nQ-1\tMS-1\t1\n")
    land(arhn_paths, "msmarco-mini", bge_file)

    result = ingest("msmarco-mini", arhn_paths, IngestConfig(download=False))
    assert result.sources == {"bge": 10}
    row = result.triplets.row(0, named=True)
    assert row["query_id"] == "Q-1"
    assert row["positive_ids"] == ["MS-1"]
    assert row["query_prompt"] == first["prompt"]
    other = result.triplets.row(1, named=True)
    assert other["query_id"].startswith("sha256:") and other["positive_ids"][0].startswith("sha256:")
    assert result.passages.filter(result.passages["doc_id"] == "MS-1")["origin"].item() == "beir"
    ids_are_known(result)


def test_two_rlhn_stages_deduplicate_queries(arhn_paths, shared_data):
    land(arhn_paths, "fiqa-rlhn", shared_data / "rlhn_llm_judgments" / RLHN_STAGE_1)
    stage_2 = land(arhn_paths, "fiqa-rlhn", shared_data / "rlhn_llm_judgments" / RLHN_STAGE_2)
    result = ingest("fiqa-rlhn", arhn_paths, IngestConfig(download=False))
    assert result.triplets.height == 25
    assert result.triplets["query_id"].n_unique() == 25
    assert set(result.triplets["source_file"]) == {str(arhn_paths.landing_dir("fiqa-rlhn") / RLHN_STAGE_1)}
    assert result.quarantine.height == 17
    assert set(result.quarantine["file"]) == {str(stage_2)}
    assert set(result.quarantine["field"]) == {"query_id"}
    assert all(reason.startswith("duplicate query") for reason in result.quarantine["reason"])
    assert sorted(result.quarantine["line"]) == list(range(1, 18))
    assert result.files_without_valid_rows == []
    assert result.failure_summary() is None


def test_file_without_valid_rows_is_named_and_other_rows_kept(arhn_paths, shared_data):
    good = land(arhn_paths, "mixed-files", shared_data / "bge_examples" / "reranker_examples.jsonl")
    bad = write_landed(arhn_paths, "mixed-files", "broken.jsonl", ['{"query": ', {"query": "q", "pos": []}])
    result = ingest("mixed-files", arhn_paths, IngestConfig(download=False))
    assert result.triplets.height == 10
    assert set(result.triplets["source_file"]) == {str(good)}
    assert result.files_without_valid_rows == [str(bad)]
    assert sorted(result.quarantine.select("line", "field").rows()) == [(1, "<line>"), (2, "pos")]
    summary = result.failure_summary()
    assert summary is not None
    assert str(bad) in summary
    assert str(good) not in summary
    assert "1 landed file(s)" in summary and "'mixed-files'" in summary


def test_empty_landed_file_is_named_in_the_failure_summary(arhn_paths):
    write_landed(arhn_paths, "with-empty", "good.jsonl", [{"query": "q", "pos": ["p"]}])
    empty = arhn_paths.landing_dir("with-empty") / "empty.jsonl"
    empty.write_bytes(b"")
    result = ingest("with-empty", arhn_paths, IngestConfig(download=False))
    assert result.triplets.height == 1
    assert result.files_without_valid_rows == [str(empty)]
    assert str(empty) in result.failure_summary()


def test_all_rows_invalid_fails(arhn_paths):
    bad = write_landed(arhn_paths, "all-bad", "x.jsonl", [{"query": "q"}])
    result = ingest("all-bad", arhn_paths, IngestConfig(download=False))
    assert result.triplets.is_empty()
    assert str(bad) in result.failure_summary()


def test_dataset_with_nothing_raises(arhn_paths):
    with pytest.raises(DatasetNotFound) as info:
        ingest("arhn-missing", arhn_paths, IngestConfig(download=False))
    for candidate in arhn_paths.dataset_dirs("arhn-missing"):
        assert str(candidate) in str(info.value)
    assert "queries.jsonl" in str(info.value)


def test_invalid_dataset_name_is_rejected_before_any_io(arhn_paths):
    with pytest.raises(InvalidDatasetKey):
        ingest("../scifact", arhn_paths, IngestConfig(download=False))
    assert not arhn_paths.home.exists()


def test_hidden_landed_files_are_ignored(arhn_paths):
    good = write_landed(arhn_paths, "inflight", "done.jsonl", [{"query": "q1", "pos": ["p1"]}])
    hidden = write_landed(arhn_paths, "inflight", ".partial.jsonl", ['{"query": "half', {"query": "q2", "pos": ["p2"]}])
    (arhn_paths.landing_dir("inflight") / "notes.txt").write_text("not a landed file")
    assert landed_files(arhn_paths.landing_dir("inflight")) == [good]

    result = ingest("inflight", arhn_paths, IngestConfig(download=False))
    assert result.triplets["query_text"].to_list() == ["q1"]
    assert result.quarantine.is_empty()
    assert str(hidden) not in set(result.passages["origin"]) | set(result.triplets["source_file"])
    assert content_id("p2") not in set(result.passages["doc_id"])


def test_only_hidden_files_means_no_dataset(arhn_paths):
    write_landed(arhn_paths, "only-hidden", ".writing.jsonl", [{"query": "q", "pos": ["p"]}])
    with pytest.raises(DatasetNotFound):
        ingest("only-hidden", arhn_paths, IngestConfig(download=False))


def test_landed_files_of_missing_folder_is_empty(tmp_path):
    assert landed_files(tmp_path / "nope") == []
