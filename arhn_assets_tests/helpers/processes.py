"""Running a script in a process of its own and killing it midway: once the LLM call cache
holds enough calls, as a crash or an out-of-memory kill would stop a run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stored_calls(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return db.execute("select count(*) from calls").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def kill_after_stored_calls(calls: Path, at_least: int, script: str, *args: str, timeout: float = 300) -> int:
    """Run `script` in a process group of its own, SIGKILL it once `calls` holds `at_least` calls
    (or it ended, or `timeout` passed), and return how many calls it had stored."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while stored_calls(calls) < at_least and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return stored_calls(calls)
