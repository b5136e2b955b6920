"""The `gpu` pool across runs: one claim wins a free slot, whatever the timing of the others."""

from __future__ import annotations

import multiprocessing
import shutil
import types
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_select

import arhn_assets.definitions  # noqa: F401  (the code location installs the claim)
from arhn_assets.pool_slots import DAGSTERS_CLAIM, claim_a_free_slot, take_slot_if_free

pytestmark = pytest.mark.all_cores

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def storage(tmp_path, monkeypatch):
    """The event log storage of an instance made from the repository's dagster.yaml (SQLite, the
    gpu pool's limit 1), in $DAGSTER_HOME, where the claiming processes open it too."""
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
        yield instance.event_log_storage


def holders(storage) -> list[str]:
    return sorted(slot.run_id for slot in storage.get_concurrency_info("gpu").claimed_slots)


def test_the_code_location_installs_the_claim():
    assert SqlEventLogStorage._claim_concurrency_slot is claim_a_free_slot


def test_a_second_run_waits_for_the_slot_and_gets_it_once_freed(storage):
    assert storage.claim_concurrency_slot("gpu", "run-a", "answer_snippets").is_claimed
    assert not storage.claim_concurrency_slot("gpu", "run-b", "answer_snippets").is_claimed
    storage.free_concurrency_slot_for_step("run-a", "answer_snippets")
    assert storage.claim_concurrency_slot("gpu", "run-b", "answer_snippets").is_claimed
    assert holders(storage) == ["run-b"]


def test_a_slot_taken_after_a_claim_found_it_free_is_not_taken_again(storage):
    """The race itself: two claims both found the one slot free; the second update must not win."""
    with storage.index_connection() as conn:
        [(slot,)] = conn.execute(db_select([ConcurrencySlotsTable.c.id])).fetchall()
        assert take_slot_if_free(conn, slot, "run-a", "answer_snippets")
        assert not take_slot_if_free(conn, slot, "run-b", "answer_snippets")  # Dagster's update by id took it
    assert holders(storage) == ["run-a"]


def claim(run_id: str, start, winners, dagsters_own: bool) -> None:
    """One run's process: opens the instance, waits for the others, claims the slot."""
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        if dagsters_own:
            storage._claim_concurrency_slot = types.MethodType(DAGSTERS_CLAIM, storage)
        start.wait()
        if storage.claim_concurrency_slot("gpu", run_id, "answer_snippets").is_claimed:
            winners.put(run_id)


def rounds_with_several_winners(storage, dagsters_own: bool = False, rounds: int = 10, runs: int = 4) -> int:
    """Of `rounds`, how many times `runs` processes (one a run, as `arhn run`s are) claiming the
    slot at the same instant gave it to more than one."""
    fork = multiprocessing.get_context("fork")
    several = 0
    for round_ in range(rounds):
        start, winners = fork.Barrier(runs), fork.Queue()
        run_ids = [f"run-{round_}-{n}" for n in range(runs)]
        processes = [fork.Process(target=claim, args=(r, start, winners, dagsters_own)) for r in run_ids]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        won = [winners.get(timeout=5) for _ in range(winners.qsize())]
        assert won, "a free slot went to nobody"
        several += len(won) > 1
        for run_id in run_ids:
            storage.free_concurrency_slot_for_step(run_id, "answer_snippets")
    return several


def test_runs_claiming_at_the_same_instant_give_the_slot_to_one(storage):
    assert rounds_with_several_winners(storage) == 0


def test_dagsters_own_claim_gives_the_slot_to_several_runs(storage):
    """Why pool_slots.py exists: once Dagster's own claim is safe, this fails, and it can go."""
    assert rounds_with_several_winners(storage, dagsters_own=True) > 0
