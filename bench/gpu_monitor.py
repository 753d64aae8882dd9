"""What the GPU benchmarks share: SM utilisation and memory sampled through NVML while a block
runs, and a clock that waits for the device.

``with Sampler() as s: ...`` then ``s.summary()``: the mean and max SM utilisation (%) and the
peak device memory used (MiB, every process's) over the block, sampled every ``period`` s in
a thread; on a machine without NVML (the CPU, or no nvidia-ml-py) the summary says so and holds
no figures. nvidia-smi's own log, sampled by bench/gpu.sh for the whole call, is the other view.
"""
from __future__ import annotations

import threading
import time

import torch


def sync() -> None:
    """Wait for the GPU's queued work (nothing on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Sampler:
    def __init__(self, period: float = 0.1):
        self.period, self.util, self.mem = period, [], []
        self._stop, self._thread, self._handle = threading.Event(), None, None
        try:
            import pynvml
            pynvml.nvmlInit()
            index = torch.cuda.current_device() if torch.cuda.is_available() else 0
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no NVML here: figures left out
            self._handle = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.util.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            self.mem.append(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20)
            self._stop.wait(self.period)

    def __enter__(self) -> "Sampler":
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def summary(self) -> dict:
        if not self.util:
            return {"nvml": "not available: no SM utilisation figures"}
        return {"sm_util_mean_pct": round(sum(self.util) / len(self.util), 1), "sm_util_max_pct": max(self.util),
                "device_mem_peak_mib": round(max(self.mem)), "samples": len(self.util)}


def device_info() -> dict:
    """The device the figures were taken on, and torch's build."""
    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    return info
