"""The landing sensor, the automation conditions and the nightly schedule, on an ephemeral
instance with the project's own definitions."""

from __future__ import annotations

import datetime
import gzip
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from arhn_assets.core.landing import scan_landing
from arhn_assets.definitions import defs
from arhn_assets.defs.automation import landing_sensor, nightly_evaluation

AN_HOUR_AGO = time.time() - 3600
BGE_ROWS = [
    {
        "query": "what lowers blood pressure",
        "pos": ["Salt reduction lowers blood pressure."],
        "neg": ["Sugar is sweet.", "Tea has caffeine."],
    },
    {"query": "what causes tides", "pos": ["The moon's gravity causes tides."], "neg": ["The sun is a star."]},
]


def land(home: Path, dataset: str, name: str, rows: list = BGE_ROWS, mtime: float = AN_HOUR_AGO) -> Path:
    folder = home / "landing" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ARHN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def tick(instance, cursor: str | None = None) -> dg.SensorResult:
    return landing_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def apply_partitions(instance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_a_new_dataset_folder_adds_its_partition_and_requests_one_refinement_run(home, instance):
    land(home, "fiqa-mined", "part-0.jsonl")
    result = tick(instance)
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["fiqa-mined"]]
    assert [r.partition_key for r in result.run_requests] == ["fiqa-mined"]
    assert result.run_requests[0].run_key.startswith("landing:fiqa-mined:")
    assert result.run_requests[0].tags["arhn/landed_files"] == "part-0.jsonl"
    assert json.loads(result.cursor)["files"].keys() == {"fiqa-mined/part-0.jsonl"}


def test_unchanged_files_request_nothing_and_a_known_partition_is_not_added_again(home, instance):
    land(home, "fiqa-mined", "part-0.jsonl")
    first = tick(instance)
    apply_partitions(instance, first)
    again = tick(instance, first.cursor)
    assert again.run_requests == []
    assert not again.dynamic_partitions_requests
    assert again.cursor == first.cursor


def test_a_changed_or_added_file_requests_a_new_run_with_a_new_run_key(home, instance):
    land(home, "fiqa-mined", "part-0.jsonl")
    first = tick(instance)
    apply_partitions(instance, first)
    land(home, "fiqa-mined", "part-0.jsonl", BGE_ROWS[:1], mtime=AN_HOUR_AGO + 60)
    changed = tick(instance, first.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["fiqa-mined"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key
    land(home, "fiqa-mined", "part-1.jsonl.gz")
    added = tick(instance, changed.cursor)
    assert added.run_requests[0].tags["arhn/landed_files"] == "part-1.jsonl.gz"
    assert len({first.run_requests[0].run_key, changed.run_requests[0].run_key, added.run_requests[0].run_key}) == 3


def test_the_same_files_give_the_same_run_key_so_a_lost_cursor_cannot_rerun_them(home, instance):
    land(home, "fiqa-mined", "part-0.jsonl")
    assert tick(instance).run_requests[0].run_key == tick(instance).run_requests[0].run_key


def test_half_written_files_are_not_picked_up(home, instance):
    # write-then-rename: the hidden in-flight name is never read
    land(home, "fiqa-mined", ".part-0.jsonl.tmp")
    land(home, "fiqa-mined", ".part-1.jsonl")
    hidden = tick(instance)
    assert hidden.run_requests == []
    assert [list(r.partition_keys) for r in hidden.dynamic_partitions_requests] == [["fiqa-mined"]]
    # a plain copy still in progress: modified just now, so it waits for the settle time
    fresh = land(home, "fiqa-mined", "part-0.jsonl", mtime=time.time())
    assert tick(instance, hidden.cursor).run_requests == []
    os.utime(fresh, (AN_HOUR_AGO, AN_HOUR_AGO))
    assert [r.partition_key for r in tick(instance, hidden.cursor).run_requests] == ["fiqa-mined"]


def sensor_errors(capfd) -> list[str]:
    """The ERROR lines the sensor logged (Dagster's logger writes to stderr, not to the root logger)."""
    return [line for line in capfd.readouterr().err.splitlines() if " - ERROR - " in line]


def test_an_unreadable_file_is_logged_once_and_skipped_without_stopping_other_datasets(home, instance, capfd):
    land(home, "good", "part-0.jsonl")
    broken = land(home, "bad", "part-0.jsonl.gz")
    broken.write_bytes(broken.read_bytes()[:-12])  # a truncated gzip: its first lines still read
    os.utime(broken, (AN_HOUR_AGO, AN_HOUR_AGO))
    land(home, "bad", "part-1.jsonl")
    capfd.readouterr()
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["good"]
    errors = sensor_errors(capfd)
    assert len(errors) == 1 and str(broken) in errors[0] and "EOFError" in errors[0], errors
    # both datasets become partitions; "bad" waits for its broken file
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == ["bad", "good"]
    again = tick(instance, result.cursor)
    assert again.run_requests == []
    assert not sensor_errors(capfd), "reported once per version of the file"
    # fixed: the dataset is refreshed with both its files
    land(home, "bad", "part-0.jsonl.gz", mtime=AN_HOUR_AGO + 60)
    fixed = tick(instance, again.cursor)
    assert [r.partition_key for r in fixed.run_requests] == ["bad"]
    assert fixed.run_requests[0].tags["arhn/landed_files"] == "part-0.jsonl.gz,part-1.jsonl"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notjson.jsonl", b"query,pos\nq,p\n", "not JSON"),
        ("list.jsonl", b"[1, 2]\n", "not a JSON object"),
        ("empty.jsonl", b"\n\n", "empty file"),
        ("fake.parquet", b"PAR1 not really", "unreadable Parquet"),
        ("fake.jsonl.gz", b"plain text, not gzip", "BadGzipFile"),
    ],
)
def test_each_kind_of_unreadable_file_is_named_with_its_reason(home, name, content, reason):
    path = land(home, "ds", name)
    path.write_bytes(content)
    os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    scan = scan_landing(home / "landing", None, time.time())
    assert scan.run_keys == {}
    [(landed, problem)] = scan.newly_unreadable
    assert landed.name == name and reason in problem


@pytest.mark.parametrize("name", ["quote's.jsonl", "with space.jsonl", "x';DROP TABLE t;--.jsonl", "données.jsonl"])
def test_a_hostile_file_name_is_refused_unread_and_its_dataset_waits(home, instance, name, monkeypatch):
    land(home, "ds", "part-0.jsonl")
    land(home, "ds", name)
    land(home, "other", "part-0.jsonl")
    opened: list[str] = []
    monkeypatch.setattr("arhn_assets.core.landing.probe_landed_file", lambda path: opened.append(path.name))
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["other"]
    assert name not in opened
    scan = scan_landing(home / "landing", json.loads(result.cursor), time.time())
    assert scan.newly_unreadable == [] and "refused file name" in scan.blocked["ds"][0], "reported once"


def test_a_folder_that_is_not_a_dataset_name_is_skipped(home, instance):
    land(home, "has space", "part-0.jsonl")
    land(home, "ok", "part-0.jsonl")
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["ok"]
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["ok"]


def test_a_removed_file_landed_again_counts_as_new(home, instance):
    path = land(home, "ds", "part-0.jsonl")
    first = tick(instance)
    path.unlink()
    gone = tick(instance, first.cursor)
    assert json.loads(gone.cursor)["files"] == {}
    land(home, "ds", "part-0.jsonl")
    assert [r.partition_key for r in tick(instance, gone.cursor).run_requests] == ["ds"]


def test_the_sensor_requests_the_refinement_job_which_stops_before_training(home, instance):
    job = defs().resolve_job_def("arhn_refinement")
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {
        "raw_triplets",
        "mined_negatives",
        "answer_snippets",
        "answerability_rankings",
        "relabel_decisions",
        "refined_triplets",
    } <= keys
    assert not keys & {"trained_retriever", "beir_scores", "retrieval_report"}
    assert landing_sensor.job_name == "arhn_refinement"
    assert landing_sensor.default_status == dg.DefaultSensorStatus.STOPPED


DOWNSTREAM_OF_REFINEMENT = ["trained_retriever", "beir_scores", "beir_query_scores", "retrieval_report"]
UPSTREAM_OF_TRAINING = [
    "raw_triplets",
    "raw_passages",
    "raw_triplets_quarantine",
    "mined_negatives",
    "answer_snippets",
    "answerability_rankings",
    "relabel_decisions",
    "refined_triplets",
]


def report(instance, assets: list[str], partition: str) -> None:
    for asset in assets:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


@pytest.mark.slow
def test_training_evaluation_and_report_follow_a_refinement_through_automation(instance):
    definitions = defs()
    instance.add_dynamic_partitions("dataset", ["ds"])
    first = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
    assert first.total_requested == 0, "nothing runs while the inputs are missing"

    report(instance, UPSTREAM_OF_TRAINING[:-1], "ds")
    partial = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=first.cursor)
    assert partial.total_requested == 0, "not before refined_triplets exists"

    report(instance, ["refined_triplets"], "ds")
    refined = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=partial.cursor)
    # eager() requests a child with its parents, so one run trains, scores and reports.
    for asset in DOWNSTREAM_OF_REFINEMENT:
        assert refined.get_requested_partitions(dg.AssetKey(asset)) == {"ds"}, asset
    assert refined.total_requested == len(DOWNSTREAM_OF_REFINEMENT)

    report(instance, DOWNSTREAM_OF_REFINEMENT, "ds")
    settled = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=refined.cursor)
    assert settled.total_requested == 0, "nothing is requested twice"

    # a model retrained by hand (from the UI, say) is scored and reported again
    report(instance, ["trained_retriever"], "ds")
    retrained = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=settled.cursor)
    assert retrained.get_num_requested(dg.AssetKey("trained_retriever")) == 0
    for asset in DOWNSTREAM_OF_REFINEMENT[1:]:
        assert retrained.get_requested_partitions(dg.AssetKey(asset)) == {"ds"}, asset


def test_the_nightly_schedule_rescores_every_trained_dataset(instance):
    instance.add_dynamic_partitions("dataset", ["trained", "untrained"])
    when = datetime.datetime(2026, 11, 22, 3, tzinfo=datetime.UTC)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    assert isinstance(nightly_evaluation(context), dg.SkipReason)
    report(instance, ["trained_retriever"], "trained")
    requests = nightly_evaluation(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert [(r.partition_key, r.run_key) for r in requests] == [("trained", "nightly:2026-11-22:trained")]
    assert nightly_evaluation.job_name == "arhn_evaluation"


def test_a_readable_file_waiting_on_a_broken_one_is_read_once(home, monkeypatch):
    from arhn_assets.core import landing

    land(home, "ds", "good.jsonl.gz")
    broken = land(home, "ds", "broken.jsonl")
    broken.write_bytes(b"not json\n")
    os.utime(broken, (AN_HOUR_AGO, AN_HOUR_AGO))
    probed, probe = [], landing.probe_landed_file
    monkeypatch.setattr(landing, "probe_landed_file", lambda path: probed.append(path.name) or probe(path))
    cursor = None
    for _ in range(3):
        scan = scan_landing(home / "landing", cursor, time.time())
        assert scan.run_keys == {}
        cursor = scan.cursor
    assert probed.count("good.jsonl.gz") == 1, probed
