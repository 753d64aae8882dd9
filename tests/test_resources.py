"""retrieval.resources: the compute device, loader workers, thread counts, and glibc keeping freed memory between steps."""
import os
import subprocess
import sys

import pytest
import torch

from retrieval.resources import GPU_LOADER_WORKERS, compute_device, keep_freed_memory, loader_workers, set_threads, usable_cores

FAULTS = """
import resource, sys, torch
from retrieval.resources import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.ones(40_000_000).sum()  # 160 MB, over glibc's largest mmap threshold (32 MB), then freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):  # the same size again and again: page faults each time it was given back
    torch.ones(40_000_000).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_cuts_the_page_faults_of_reallocated_tensors():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
        return int(out.stdout.split()[-1])
    pages = 16 * 160_000_000 // 4096
    assert faults("default") > 0.9 * pages  # glibc maps each afresh: one fault per page touched
    # served from the kept heap most times (torch's aligned allocations do not always fit the
    # freed block, so some allocations still extend the heap: 1 to 4 in 16 measured)
    assert faults("keep") < 0.5 * pages


@pytest.mark.parametrize("cuda,local_rank,expected", [(True, 0, "cuda:0"), (True, 1, "cuda:1"), (False, 1, "cpu")])
def test_compute_device_is_the_processs_gpu_or_the_cpu(monkeypatch, cuda, local_rank, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert compute_device(local_rank) == torch.device(expected)


@pytest.mark.parametrize("cuda,cores,on_node,expected", [
    (False, 16, 1, 0),                       # the CPU: the main process decodes
    (True, 16, 1, GPU_LOADER_WORKERS),       # a GPU on a big machine
    (True, 3, 1, 2),                         # a GPU on 3 cores: the process's core left to it
    (True, 16, 8, 1),                        # 8 processes share 16 cores: 2 each, one for the process
    (True, 1, 1, 0),
])
def test_auto_loader_workers(monkeypatch, cuda, cores, on_node, expected):
    import retrieval.resources as resources
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(resources, "usable_cores", lambda: cores)
    assert loader_workers("auto", on_node) == expected
    assert loader_workers(3, on_node) == 3  # a count is kept as it is


def test_set_threads_shares_the_cores_among_a_nodes_processes():
    saved = torch.get_num_threads()
    try:
        assert set_threads(3) == 3 and torch.get_num_threads() == 3
        assert set_threads(0, processes_on_node=2) == max(1, usable_cores() // 2)
        assert set_threads(0, processes_on_node=10_000) == 1
    finally:
        torch.set_num_threads(saved)


AFFINITY = """
import os, torch
from retrieval.resources import set_threads, usable_cores
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # as `taskset -c <one core>` would
print(usable_cores(), set_threads(0), torch.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity")
def test_threads_follow_the_cpu_affinity_not_the_machines_cores():
    out = subprocess.run([sys.executable, "-c", AFFINITY], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.split() == ["1", "1", "1"]  # os.cpu_count() would say every core of the machine


def test_rerank_modules_do_not_load_torch():
    # the re-ranking stages ask resources for the usable cores; torch would add seconds and memory
    code = "import sys, retrieval.rank.diffusion, retrieval.resources; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "False"


def test_usable_cores_without_cpu_affinity(monkeypatch):
    import retrieval.resources as resources
    monkeypatch.delattr(resources.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(resources.os, "cpu_count", lambda: 6)
    assert usable_cores() == 6
    monkeypatch.setattr(resources.os, "cpu_count", lambda: None)  # unknown: one core
    assert usable_cores() == 1


def test_keep_freed_memory_is_false_without_glibc(monkeypatch):
    import ctypes.util
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    keep_freed_memory.cache_clear()
    try:
        assert keep_freed_memory() is False
    finally:
        keep_freed_memory.cache_clear()
