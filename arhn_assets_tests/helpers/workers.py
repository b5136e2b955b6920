"""How `make test` spreads the tests over pytest-xdist workers (`-n 2 --dist loadgroup`).

Each worker runs on a disjoint share of the cores, and so does everything it starts (llama.cpp,
torch, Dagster subprocesses): llama.cpp's threads spin at every barrier, so two workers' threads
on the same cores would slow each other many times over. Every default thread count in the
product follows the process's affinity (`core/cores.py`, OpenMP), so nothing oversubscribes.
Tests that share something costly to make are grouped onto one worker by the marks below.
"""

from __future__ import annotations

import os

import pytest

# Tests that encode SciFact's whole corpus (5,183 passages) with the base model, through the
# session's embedding cache: one worker runs them all, so the corpus is encoded once, not per worker.
SCIFACT_CORPUS = pytest.mark.xdist_group("scifact_corpus")
# Tests that start a local Ray cluster: one worker runs them all, so that two clusters never share
# the cores and a module's cluster fixture starts once.
LOCAL_RAY = pytest.mark.xdist_group("local_ray")


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
