"""sentence-transformers datasets in and out of arhn: every layout landed as Parquet, JSONL and a
`datasets` save_to_disk folder; the quarantine of bad columns, labels and folders; the landing
sensor on a dataset folder; a round trip through the real `mine_hard_negatives`; and a training
step on the exported n-tuple dataset. Real files, real libraries, no mocks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import polars as pl
import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from arhn_assets.core.embeddings import default_model_path
from arhn_assets.core.exports import export_training_files, ntuple_width
from arhn_assets.core.ingest import IngestConfig, ingest
from arhn_assets.core.landing import scan_landing
from arhn_assets.core.paths import ArhnPaths
from arhn_assets.core.triplet_formats import content_id
from arhn_assets_tests.helpers.toy_data import QUERIES, TOPICS, make_passages

Q1, Q2 = QUERIES[0][1], QUERIES[3][1]  # plants and sunlight; volcanoes
P1, P2, N1, N2 = TOPICS["photo"][0], TOPICS["photo"][2], TOPICS["bread"][0], TOPICS["vaccine"][1]
P3, N3 = TOPICS["volcano"][0], TOPICS["photo"][5]
# What every layout below says: Q1 has positives P1, P2 and negatives N1, N2; Q2 has P3 and N3.
EXPECTED = {Q1: ([P1, P2], [N1, N2]), Q2: ([P3], [N3])}
LAYOUTS = {
    "pair": {"query": [Q1, Q1, Q2], "answer": [P1, P2, P3]},
    "triplet": {"anchor": [Q1, Q1, Q1, Q2], "positive": [P1, P1, P2, P3], "negative": [N1, N2, N1, N3]},
    "n-tuple": {
        "question": [Q1, Q1, Q2],
        "passage": [P1, P2, P3],
        "negative_1": [N1, N1, N3],
        "negative_2": [N2, N2, N1],
    },
    "labeled-pair": {
        "query": [Q1, Q1, Q1, Q1, Q2, Q2],
        "document": [P1, N1, N2, P2, P3, N3],
        "label": [1, 0, 0, 1, 1, 0],
    },
}
EXPECTED_BY_LAYOUT = {
    "pair": {q: (pos, []) for q, (pos, _) in EXPECTED.items()},
    "triplet": EXPECTED,
    "n-tuple": {Q1: EXPECTED[Q1], Q2: ([P3], [N3, N1])},
    "labeled-pair": EXPECTED,
}
KINDS = ("parquet", "jsonl", "dataset")


def paths_for(tmp_path: Path) -> ArhnPaths:
    return ArhnPaths(home=tmp_path / "home", data_dir=tmp_path / "no-beir")


def land_columns(paths: ArhnPaths, dataset: str, name: str, columns: dict, kind: str) -> Path:
    """`columns` landed as Parquet, JSONL or a save_to_disk folder (written hidden, then renamed)."""
    folder = paths.landing_dir(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"parquet": ".parquet", "jsonl": ".jsonl", "dataset": ""}[kind]
    path, hidden = folder / f"{name}{suffix}", folder / f".{name}{suffix}"
    if kind == "parquet":
        pl.DataFrame(columns).write_parquet(hidden)
    elif kind == "jsonl":
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        hidden.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        Dataset.from_dict(columns).save_to_disk(str(hidden))
    os.replace(hidden, path)
    return path


def by_query(triplets: pl.DataFrame) -> dict[str, tuple[list[str], list[str]]]:
    return {q: (p, n) for q, p, n in triplets.select("query_text", "positive_ids", "provided_negative_ids").iter_rows()}


def as_ids(expected: dict) -> dict:
    return {q: ([content_id(t) for t in pos], [content_id(t) for t in neg]) for q, (pos, neg) in expected.items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_ingests_one_query_per_anchor(tmp_path, layout, kind):
    paths = paths_for(tmp_path)
    path = land_columns(paths, "st", "train", LAYOUTS[layout], kind)

    result = ingest("st", paths, IngestConfig(download=False))

    assert result.quarantine.is_empty(), result.quarantine.rows()
    assert by_query(result.triplets) == as_ids(EXPECTED_BY_LAYOUT[layout])
    assert result.triplets["query_id"].to_list() == [content_id(Q1), content_id(Q2)]
    assert set(result.triplets["source"]) == {f"st:{layout}"} and set(result.triplets["source_file"]) == {str(path)}
    assert result.triplets["source_line"].to_list() == [1, LAYOUTS[layout][next(iter(LAYOUTS[layout]))].index(Q2) + 1]
    texts = dict(result.passages.select("doc_id", "text").iter_rows())
    wanted = {t for pos, neg in EXPECTED_BY_LAYOUT[layout].values() for t in pos + neg}
    assert set(texts.values()) == wanted and all(texts[content_id(t)] == t for t in wanted)


def test_scores_of_mined_triplets_are_kept_per_passage(tmp_path):
    paths = paths_for(tmp_path)
    columns = {**LAYOUTS["triplet"], "scores": [[0.9, 0.5], [0.9, 0.4], [0.8, 0.5], [0.7, 0.1]]}
    land_columns(paths, "st", "scored", columns, "parquet")
    triplets = ingest("st", paths, IngestConfig(download=False)).triplets
    assert triplets["positive_scores"].to_list() == [[0.9, 0.8], [0.7]]
    assert triplets["provided_negative_scores"].to_list() == [[0.5, 0.4], [0.1]]


def quarantine_rows(result, path: Path) -> list[tuple[int, str, str]]:
    return result.quarantine.filter(pl.col("file") == str(path)).sort("line").select("line", "field", "reason").rows()


@pytest.mark.parametrize("kind", ["parquet", "dataset"])
def test_unknown_columns_quarantine_the_file_naming_each_column(tmp_path, kind):
    paths = paths_for(tmp_path)
    land_columns(paths, "st", "good", LAYOUTS["triplet"], "parquet")
    columns = {**LAYOUTS["triplet"], "hardness": [1, 2, 3, 4], "score": [0.1, 0.2, 0.3, 0.4]}
    bad = land_columns(paths, "st", "unknown", columns, kind)

    result = ingest("st", paths, IngestConfig(download=False))

    rows = quarantine_rows(result, bad)
    assert [(line, field) for line, field, _ in rows] == [(0, "hardness"), (0, "score")]
    assert "unknown column 'hardness'" in rows[0][2] and "output_scores=False" in rows[1][2]
    assert result.files_without_valid_rows == [str(bad)] and str(bad) in result.failure_summary()
    assert by_query(result.triplets) == as_ids(EXPECTED)  # the good file's rows are all kept


def test_jsonl_rows_are_judged_one_by_one(tmp_path):
    """In JSONL each line is its own: a bad label or an unknown field costs that line only."""
    paths = paths_for(tmp_path)
    lines = [
        {"query": Q1, "answer": P1, "label": 1},
        {"query": Q1, "answer": N1, "label": "0"},
        {"query": Q1, "answer": N2, "label": 0},
        {"anchor": Q2, "positive": P3, "negative": N3, "margin": 0.3},
        {"anchor": Q2, "positive": P3, "negative": N3},
        {"query": "no positive at all", "answer": N1, "label": 0},
        {"query": "soft label", "answer": N1, "label": 0.5},
    ]
    path = paths.landing_dir("st") / "mixed.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")

    result = ingest("st", paths, IngestConfig(download=False))

    rows = quarantine_rows(result, path)
    assert [(line, field) for line, field, _ in rows] == [(2, "label"), (4, "margin"), (6, "label"), (7, "label")]
    assert "expected a number" in rows[0][2] and "unknown column 'margin'" in rows[1][2]
    assert "needs a positive" in rows[2][2] and "expected 1 (positive) or 0" in rows[3][2]
    assert by_query(result.triplets) == as_ids({Q1: ([P1], [N2]), Q2: ([P3], [N3])})
    assert set(result.passages["text"]) == {P1, N2, P3, N3}  # nothing left behind by a rejected row


@pytest.mark.parametrize("kind", ["parquet", "dataset"])
def test_a_label_column_of_strings_quarantines_each_row_with_its_row_and_column(tmp_path, kind):
    paths = paths_for(tmp_path)
    columns = {**LAYOUTS["labeled-pair"], "label": ["1", "0", "0", "1", "1", "0"]}
    path = land_columns(paths, "st", "labels", columns, kind)
    result = ingest("st", paths, IngestConfig(download=False))
    rows = quarantine_rows(result, path)
    assert [(line, field) for line, field, _ in rows] == [(i, "label") for i in range(1, 7)]
    assert all("expected a number" in reason for _, _, reason in rows)
    assert result.triplets.is_empty() and result.passages.is_empty()


def test_a_missing_label_costs_only_its_row(tmp_path):
    paths = paths_for(tmp_path)
    columns = {**LAYOUTS["labeled-pair"], "label": [1, 0, None, 1, 1, 0]}
    path = land_columns(paths, "st", "labels", columns, "parquet")
    result = ingest("st", paths, IngestConfig(download=False))
    assert quarantine_rows(result, path) == [(3, "label", "missing")]
    assert by_query(result.triplets) == as_ids({Q1: ([P1, P2], [N1]), Q2: ([P3], [N3])})


def broken_folders(landing: Path) -> dict[str, str]:
    """Folders that are not a landable dataset, and a fragment of the reason each gets."""
    (landing / "notes").mkdir(parents=True)
    (landing / "notes" / "readme.txt").write_text("not a dataset")
    DatasetDict({"train": Dataset.from_dict(LAYOUTS["pair"])}).save_to_disk(str(landing / "dict"))
    Dataset.from_dict(LAYOUTS["pair"]).save_to_disk(str(landing / "damaged"))
    for arrow in (landing / "damaged").glob("*.arrow"):
        arrow.write_bytes(b"not arrow at all")
    Dataset.from_dict(LAYOUTS["pair"]).save_to_disk(str(landing / "bad-state"))
    (landing / "bad-state" / "state.json").write_text("{")
    return {
        "notes": "nor a datasets save_to_disk folder",
        "dict": "a DatasetDict folder",
        "damaged": "unreadable datasets folder",
        "bad-state": "unreadable datasets folder",
    }


def test_a_folder_that_is_not_a_dataset_gets_one_quarantine_row(tmp_path):
    paths = paths_for(tmp_path)
    good = land_columns(paths, "st", "good", LAYOUTS["triplet"], "dataset")
    reasons = broken_folders(paths.landing_dir("st"))

    result = ingest("st", paths, IngestConfig(download=False))

    for name, fragment in reasons.items():
        [(line, field, reason)] = quarantine_rows(result, paths.landing_dir("st") / name)
        assert (line, field, fragment in reason) == (0, "<file>", True), reason
    assert sorted(result.files_without_valid_rows) == sorted(str(paths.landing_dir("st") / n) for n in reasons)
    assert quarantine_rows(result, good) == [] and by_query(result.triplets) == as_ids(EXPECTED)


def test_the_sensor_sees_a_dataset_folder_as_one_landed_item(tmp_path):
    landing_root = tmp_path / "landing"
    folder = landing_root / "st" / "mined"
    Dataset.from_dict(LAYOUTS["n-tuple"]).save_to_disk(str(folder))
    now = time.time()

    assert [f.name for f in scan_landing(landing_root, None, now).settling] == ["mined"]  # just written

    first = scan_landing(landing_root, None, now + 60)
    [landed] = first.changed["st"]
    assert (landed.name, landed.size) == ("mined", sum(p.stat().st_size for p in folder.iterdir()))
    assert scan_landing(landing_root, first.cursor, now + 120).changed == {}  # the cursor knows it

    Dataset.from_dict(LAYOUTS["triplet"]).save_to_disk(str(landing_root / "st" / ".mined-v2"))
    assert scan_landing(landing_root, first.cursor, now + 120).changed == {}  # hidden: still being written
    os.replace(folder, landing_root / "st" / ".old")
    os.replace(landing_root / "st" / ".mined-v2", folder)
    again = scan_landing(landing_root, first.cursor, time.time() + 60)
    assert [f.name for f in again.changed["st"]] == ["mined"]
    assert again.run_keys["st"] != first.run_keys["st"]


def test_the_sensor_holds_a_dataset_whose_folder_cannot_be_read(tmp_path):
    landing_root = tmp_path / "landing"
    Dataset.from_dict(LAYOUTS["pair"]).save_to_disk(str(landing_root / "st" / "good"))
    reasons = broken_folders(landing_root / "st")
    Dataset.from_dict(LAYOUTS["pair"]).save_to_disk(str(landing_root / "other" / "good"))

    scan = scan_landing(landing_root, None, time.time() + 60)

    assert "st" not in scan.changed and [f.name for f in scan.changed["other"]] == ["good"]
    unreadable = {landed.name: problem for landed, problem in scan.newly_unreadable}
    assert set(unreadable) == set(reasons)
    assert all(fragment in unreadable[name] for name, fragment in reasons.items())
    again = scan_landing(landing_root, scan.cursor, time.time() + 60)
    assert again.newly_unreadable == [] and "st" in again.blocked  # reported once, still held


@pytest.mark.parametrize(
    ("counts", "width"),
    [([], 0), ([0, 0], 0), ([3, 1, 2], 1), ([25] * 99 + [1], 25), ([20] * 10 + [9] * 10, 9), ([0, 4, 4], 4)],
)
def test_ntuple_width_keeps_nearly_every_row(counts, width):
    assert ntuple_width(counts) == width


def refined_from(triplets: pl.DataFrame, config: str = "baseline") -> pl.DataFrame:
    return triplets.select(
        pl.lit(config).alias("config"), "query_id", "positive_ids", negative_ids="provided_negative_ids"
    )


def test_exports_write_both_layouts_as_parquet_and_dataset_folders(tmp_path):
    paths = paths_for(tmp_path)
    triplets = make_toy_triplets()
    refined = pl.concat([refined_from(triplets), refined_from(triplets.head(1), "R+F")])
    folder = tmp_path / "exports" / "toy"

    written = export_training_files(refined, triplets, make_passages(), folder)

    target = folder / "baseline"
    assert sorted(p.name for p in target.iterdir()) == [
        "flagembedding.jsonl",
        "sentence_transformers",
        "sentence_transformers.parquet",
        "sentence_transformers_ntuple",
        "sentence_transformers_ntuple.parquet",
        "tevatron.jsonl",
    ]  # no temporary name left behind
    assert written["baseline/sentence_transformers_ntuple_dataset"] == str(target / "sentence_transformers_ntuple")
    ntuple = load_from_disk(str(target / "sentence_transformers_ntuple"))
    assert ntuple.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert pl.read_parquet(target / "sentence_transformers_ntuple.parquet").equals(ntuple.to_polars())
    # q_photo has 3 negatives (cut to 2), q_chloro 2 per positive; q_mrna has none (dropped: n = 2).
    assert list(ntuple["anchor"]) == [QUERIES[0][1], QUERIES[1][1], QUERIES[1][1]]
    assert list(ntuple["negative_2"]) == [N2, N2, N2]
    assert "1 of 4 (query, positive) rows dropped" in ntuple.info.description
    triplet = load_from_disk(str(target / "sentence_transformers"))
    assert triplet.column_names == ["anchor", "positive", "negative"] and len(triplet) == 3 + 2 * 2
    assert pl.read_parquet(target / "sentence_transformers.parquet").equals(triplet.to_polars())

    # arhn's output is arhn's input: the n-tuple folder lands and ingests to the queries it kept.
    os.makedirs(paths.landing_dir("again"))
    os.replace(target / "sentence_transformers_ntuple", paths.landing_dir("again") / "ntuple")
    again = ingest("again", paths, IngestConfig(download=False))
    assert again.quarantine.is_empty() and again.triplets["query_text"].to_list() == [QUERIES[0][1], QUERIES[1][1]]
    assert again.triplets["positive_ids"].to_list() == [
        [content_id(P1)],
        [content_id(TOPICS["photo"][i]) for i in (1, 2)],
    ]


def make_toy_triplets() -> pl.DataFrame:
    """Three toy queries with 3, 2 and no negatives (q_chloro has two positives)."""
    passages = make_passages().filter(pl.col("doc_id") != "photo-0-copy")
    ids = {text: doc_id for doc_id, _, text in passages.iter_rows()}
    negatives = [[ids[N1], ids[N2], ids[N3]], [ids[N1], ids[N2]], []]
    return pl.DataFrame(
        {
            "query_id": [q for q, _, _ in QUERIES[:3]],
            "query_text": [t for _, t, _ in QUERIES[:3]],
            "positive_ids": [p for _, _, p in QUERIES[:3]],
            "provided_negative_ids": negatives,
        }
    )


def base_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(default_model_path(), device="cpu")


@pytest.fixture(scope="module")
def mined() -> Dataset:
    """The toy queries' hard negatives, mined by sentence-transformers itself in its n-tuple layout."""
    from sentence_transformers.util import mine_hard_negatives

    texts = dict(make_passages().select("doc_id", "text").iter_rows())
    pairs = Dataset.from_dict(
        {
            "query": [query for _, query, positives in QUERIES for _ in positives],
            "answer": [texts[doc_id] for _, _, positives in QUERIES for doc_id in positives],
        }
    )
    return mine_hard_negatives(
        pairs, base_model(), corpus=list(texts.values()), num_negatives=3, output_format="n-tuple", verbose=False
    )


def mined_expectation(mined: Dataset) -> dict[str, tuple[list[str], list[str]]]:
    """Per anchor: its positives, and its negatives in first-seen order, from the mined rows."""
    expected: dict[str, tuple[list[str], list[str]]] = {}
    for row in mined:
        positives, negatives = expected.setdefault(row["query"], ([], []))
        positives += [row["answer"]] if row["answer"] not in positives else []
        negatives += [row[f"negative_{i}"] for i in (1, 2, 3) if row[f"negative_{i}"] not in negatives]
    return expected


def land_mined(paths: ArhnPaths, dataset: str, mined: Dataset) -> None:
    """As a user would: save_to_disk under a hidden name, then rename it into the landing folder."""
    landing = paths.landing_dir(dataset)
    landing.mkdir(parents=True)
    mined.save_to_disk(str(landing / ".mined"))
    os.replace(landing / ".mined", landing / "mined")


def test_mined_ntuples_round_trip_through_landing_and_ingest(tmp_path, mined):
    assert mined.column_names == ["query", "answer", "negative_1", "negative_2", "negative_3"]
    assert len(mined) == 7  # one row per (query, positive): q_chloro has two
    paths = paths_for(tmp_path)
    land_mined(paths, "toy-st", mined)

    scan = scan_landing(paths.home / "landing", None, time.time() + 60)
    assert [f.name for f in scan.changed["toy-st"]] == ["mined"] and not scan.blocked
    result = ingest("toy-st", paths, IngestConfig(download=False))

    assert result.quarantine.is_empty(), result.quarantine.rows()
    assert result.triplets["query_text"].to_list() == [query for _, query, _ in QUERIES]
    assert by_query(result.triplets) == as_ids(mined_expectation(mined))
    assert result.triplets.filter(pl.col("query_id") == content_id(QUERIES[1][1]))["positive_ids"].to_list() == [
        [content_id(TOPICS["photo"][1]), content_id(TOPICS["photo"][2])]
    ]
    assert set(result.triplets["source"]) == {"st:n-tuple"}


@pytest.mark.all_cores
def test_one_training_step_on_the_exported_ntuple_dataset(tmp_path, mined):
    """mine_hard_negatives -> landing -> ingest -> export -> load_from_disk -> SentenceTransformerTrainer."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    paths = paths_for(tmp_path)
    land_mined(paths, "toy-st", mined)
    result = ingest("toy-st", paths, IngestConfig(download=False))
    exported = export_training_files(
        refined_from(result.triplets), result.triplets, result.passages, tmp_path / "exports"
    )
    train = load_from_disk(exported["baseline/sentence_transformers_ntuple_dataset"])
    assert train.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert len(train) == len(mined)

    model = base_model()
    before = model.encode(QUERIES[0][1])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "checkpoints"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model)
    )
    output = trainer.train()

    assert output.global_step == 1 and output.training_loss > 0
    assert not (model.encode(QUERIES[0][1]) == before).all()  # the step moved the weights
