"""Small torch utilities shared by the torch-backed policies and scorers.

    torch_threads(n)    torch's intra-op thread count set to `n` for a block (None: unchanged)
    default_threads()   training threads: the CPUs this process may use that others leave free
"""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["default_threads", "torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to `n` for a block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_threads() -> int:
    """Training threads: the CPUs this process may use, less those other processes keep busy (the
    1-minute load average). OpenMP threads that outnumber the free cores stall at every barrier:
    on a busy 2-core machine 2 threads trained the toy policy 5 times slower than 1."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cpus = max(1, os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0.0
    return max(1, min(cpus, cpus - int(busy)))
