"""Pool slots taken by a compare-and-set, so that the `gpu` pool's limit holds across runs.

Dagster 1.13 claims a slot by selecting a free slot row, then updating that row by its id alone.
SQLite, the local instance's storage, ignores the SELECT's FOR UPDATE, so runs that claim at the
same instant all take the one slot: two LLM steps ran at once when two `arhn run`s judged two
partitions (test_warehouse), and 4 processes claiming together got it 2 to 4 times over in every
one of 20 tries (test_pool_slots). Here the update also requires the slot to be free: one claim
wins, the others are blocked, and Dagster's executor retries a blocked step until a slot frees.

Written by hand and installed over Dagster's private `_claim_concurrency_slot` when the code
location loads (definitions.py), because Dagster has no such check and no hook for one; the
dagster<1.14 pin in pyproject.toml keeps that private name where this module reads it.
test_pool_slots fails the day Dagster's own claim is safe, so that this can go.
"""

from __future__ import annotations

import sqlalchemy as db
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._utils.concurrency import ConcurrencySlotStatus
from sqlalchemy.engine import Connection

DAGSTERS_CLAIM = SqlEventLogStorage._claim_concurrency_slot


def claim_a_free_slot(
    storage: SqlEventLogStorage, concurrency_key: str, run_id: str, step_key: str
) -> ConcurrencySlotStatus:
    """Dagster's `_claim_concurrency_slot`, with the slot taken only if it is still free."""
    with storage.index_connection() as conn:
        free = conn.execute(
            db_select([ConcurrencySlotsTable.c.id])
            .where(
                ConcurrencySlotsTable.c.concurrency_key == concurrency_key,
                ConcurrencySlotsTable.c.step_key.is_(None),
                ConcurrencySlotsTable.c.deleted == db.false(),
            )
            .limit(1)
        ).fetchone()
        if free and take_slot_if_free(conn, free[0], run_id, step_key):
            return ConcurrencySlotStatus.CLAIMED
        return ConcurrencySlotStatus.BLOCKED


def take_slot_if_free(conn: Connection, slot_id: int, run_id: str, step_key: str) -> bool:
    """Gives slot `slot_id` to the step if no step holds it: one UPDATE, atomic in the database."""
    taken = conn.execute(
        ConcurrencySlotsTable.update()
        .values(run_id=run_id, step_key=step_key)
        .where(db.and_(ConcurrencySlotsTable.c.id == slot_id, ConcurrencySlotsTable.c.step_key.is_(None)))
    )
    return taken.rowcount == 1


def install() -> None:
    """Every SQL event log storage in this process claims pool slots by `claim_a_free_slot`."""
    SqlEventLogStorage._claim_concurrency_slot = claim_a_free_slot
