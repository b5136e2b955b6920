"""The Parquet lake's partitions: replaced atomically, and a killed writer's leftovers swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import polars as pl

from arhn_assets.core.lake import PART_FILE, read_partition, write_partition

# Random floats compress badly: writing them takes long enough to be killed midway.
SLOW_WRITE = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    import polars as pl
    from arhn_assets.core.lake import write_partition
    write_partition(pl.DataFrame({"x": np.random.default_rng(0).random(40_000_000)}), Path(sys.argv[1]))
""")


def test_a_writer_killed_midway_leaves_the_previous_partition_and_the_next_write_sweeps_its_file(tmp_path):
    partition = tmp_path / "lake" / "asset" / "dataset=toy"
    previous = pl.DataFrame({"x": [1.0, 2.0]})
    write_partition(previous, partition)
    root = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, str(partition)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 0 for p in partition.glob(".*.tmp")) and time.monotonic() < deadline:
        assert writer.poll() is None, "the writer finished before it could be killed"
        time.sleep(0.01)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()

    [leftover] = partition.glob(".*.tmp")
    assert str(writer.pid) in leftover.name
    assert read_partition(partition).equals(previous)
    glob = f"{tmp_path}/lake/*/*/*.parquet"
    assert duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning = true)").fetchall() == [(2,)]

    write_partition(pl.DataFrame({"x": [3.0]}), partition)
    assert sorted(p.name for p in partition.iterdir()) == [PART_FILE]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    partition = tmp_path / "dataset=toy"
    partition.mkdir()
    in_flight = partition / f".{PART_FILE}.0123abcd.{os.getpid()}.tmp"
    in_flight.write_bytes(b"being written")
    write_partition(pl.DataFrame({"x": [1]}), partition)
    assert in_flight.exists()
