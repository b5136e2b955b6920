"""How many cores this process may run on."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores in this process's CPU affinity (taskset, a container's cpuset, a test worker pinned
    to its share), not the machine's count: a default thread count above it oversubscribes the
    cores, and llama.cpp's threads, which spin at every barrier, then slow each other many times over."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
