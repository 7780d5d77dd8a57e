"""CPU threads of this process: torch (intra-op), OpenCV; one choice made by the localizer, not inherited.

Torch's default is one thread per core. Next to another multi-threaded process (another node, a training job)
OpenMP threads that busy-wait for each other oversubscribe the cores: XFeat extraction took 547 ms per 640x480
frame with 2 threads against 96-106 ms with 1 on this project's 2-core machine at load 6-7 (127-145 ms with 2
threads and OMP_WAIT_POLICY=PASSIVE). ``threads: 0`` (auto) leaves half of the cores to the rest of the robot's
software: 1 thread on 2 cores, 2 on 4, at most 4.
"""
from __future__ import annotations

import os
from typing import Any

MAX_AUTO_THREADS = 4


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(value: Any) -> int:
    """``threads`` conf value -> a thread count: a positive int as is, 0 / None / "auto" -> half the cores
    (at least 1, at most ``MAX_AUTO_THREADS``)."""
    if value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return max(1, min(MAX_AUTO_THREADS, available_cores() // 2))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"threads must be a positive integer, or 0 / 'auto' for half the cores; got {value!r}")
    return value


def set_threads(value: Any) -> int:
    """Set torch's intra-op threads and OpenCV's threads to ``resolve_threads(value)``; returns the count.

    Process-wide: the last localizer created in a process decides (one per process is the norm)."""
    n = resolve_threads(value)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - opencv is a dependency
        pass
    return n
