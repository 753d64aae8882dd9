"""A process's use of the machine: its compute device, its loader workers, torch's thread count and glibc's allocator.

Large activations (over 32 MB: at batch 32 and 192 px, the first stages' maps) are allocated by
glibc with ``mmap`` and handed back to the kernel when freed, so every step or batch pays the
page faults of touching them afresh: about a quarter of a lite0 training step on the CPU
(``bench/train_step.py``), a fifth of extraction at 280 px. :func:`keep_freed_memory` (called by
training and by every embedding loop) makes glibc serve them from its heap and keep freed memory
for the next batch. The cost is memory: what is freed is not given back, and an allocation that
does not fit a freed block grows the heap (the training loop's peak: 2,522 MB against 2,427
without it, at 192 px on grocery).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset),
    which ``os.cpu_count()`` ignores, so that threads are not started for cores it cannot use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def set_threads(threads: int, processes_on_node: int = 1) -> int:
    """torch's intra-op threads: ``threads``, or 0 = the usable cores shared among the node's processes."""
    import torch  # here: the re-ranking stages ask usable_cores() without loading torch

    n = threads or max(1, usable_cores() // processes_on_node)
    torch.set_num_threads(n)
    return n


def compute_device(local_rank: int = 0) -> torch.device:
    """Where the networks run: the process's GPU (``cuda:<local_rank>``) when CUDA is there, else the CPU."""
    import torch

    return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")


GPU_LOADER_WORKERS = 4  # fed one H200 at 192 px: 980 img/s against 348 with none, 12 no faster (README "Scaling up")


def loader_workers(setting: int | str, processes_on_node: int = 1) -> int:
    """DataLoader worker processes for a ``num_workers`` param: the number itself, or for ``auto``
    none on the CPU (the main process decodes: the faster on 2 cores) and, with CUDA,
    :data:`GPU_LOADER_WORKERS`, at most each of the node's processes' share of the usable cores
    less the one it runs on."""
    if setting != "auto":
        return int(setting)
    import torch

    if not torch.cuda.is_available():
        return 0
    return max(0, min(GPU_LOADER_WORKERS, usable_cores() // processes_on_node - 1))


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to allocate from its heap and keep what is freed (no-op, False, elsewhere); a
    setting of the whole process, made once however often it is asked for."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
