"""The Parquet lake: one file per asset per dataset partition, replaced atomically.

Layout: `<home>/lake/<asset>/dataset=<dataset>/part-0.parquet` (hive style), so
`read_parquet('<home>/lake/<asset>/*/*.parquet', hive_partitioning=true)` in DuckDB, or
`pl.scan_parquet(..., hive_partitioning=True)`, sees every dataset at once.

A partition is written to a temporary name in its own directory and renamed over the old
file, so a reader never sees a half-written partition and a crash leaves the previous version.
The temporary name carries the writer's pid, so the next write sweeps what a killed one left.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl

PART_FILE = "part-0.parquet"


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs on this machine (the owner of a temporary file or folder)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _sweep_killed_writes(partition_dir: Path) -> None:
    for leftover in partition_dir.glob(f".{PART_FILE}.*.tmp"):
        pid = leftover.name.split(".")[-2]
        if pid.isdigit() and not process_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def write_partition(frame: pl.DataFrame, partition_dir: Path) -> Path:
    partition_dir.mkdir(parents=True, exist_ok=True)
    _sweep_killed_writes(partition_dir)
    final = partition_dir / PART_FILE
    # The temporary name does not end in .parquet, so lake globs never pick it up.
    tmp = partition_dir / f".{PART_FILE}.{uuid.uuid4().hex}.{os.getpid()}.tmp"
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_partition(partition_dir: Path) -> pl.DataFrame:
    path = partition_dir / PART_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize this asset for this dataset partition first")
    return pl.read_parquet(path)
