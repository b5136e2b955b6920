"""How `make test-fast` and the first pass of `make test` spread tests over pytest-xdist workers (`-n 2`).

Each worker runs on a disjoint share of the cores, and so does everything it starts (llama.cpp,
torch, Dagster subprocesses): llama.cpp's threads spin at every barrier, so two workers' threads
on the same cores would slow each other many times over. Every default thread count in the
product follows the process's affinity (`core/cores.py`, OpenMP), so nothing oversubscribes.
"""

from __future__ import annotations

import os


def pin_to_a_share_of_the_cores() -> None:
    """Under xdist, restricts this worker to its share of the cores (the rest, if uneven, to none)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if not worker or workers > len(cores):
        return
    share = len(cores) // workers
    index = int(worker.removeprefix("gw"))
    os.sched_setaffinity(0, cores[index * share : (index + 1) * share])
