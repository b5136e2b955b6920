"""Default thread counts follow the cores a process may run on, not the machine's count."""

from __future__ import annotations

import os
import subprocess
import sys

PRINT_DEFAULTS = (
    "from arhn_assets.core.cores import usable_cores; from arhn_assets.defs.resources import local_ray_cpus; "
    "print(usable_cores(), local_ray_cpus())"
)


def test_a_process_pinned_to_one_core_defaults_to_one_thread():
    first = min(os.sched_getaffinity(0))
    printed = subprocess.run(
        [sys.executable, "-c", PRINT_DEFAULTS],
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # llama.cpp gets one thread; a local Ray still offers two slots (one replica and Ray Data's tasks)
    assert printed == ["1", "2"]
