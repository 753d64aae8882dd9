"""Each stage's own wall time in its metrics: one ``wall`` entry, durations only.

    clock = Clock(__name__ == "__main__")   # first line of a stage's main
    ...
    write_json(args.metrics, clock.stamp(metrics, images=n))

``stamp`` adds ``"wall": {"seconds": S}`` to the metrics, and ``"images": N, "img_per_s": N / S``
where the stage processes images, so ``dvc metrics show`` answers where a run's time went (the
column ``wall.seconds``). ``S`` runs from the start of the process when the stage is the process's
main module (interpreter start-up and imports included: the time DVC waits for; read from
/proc on Linux, elsewhere from ``Clock()``), or from ``Clock()`` when a caller runs the stage's
``main`` in its own process (tests, notebooks). No timestamps are written, only durations.
"""
from __future__ import annotations

import os
import time


def process_age() -> float:
    """Seconds since this process started (Linux: /proc/self/stat), or 0.0 where unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return age if 0.0 <= age < 30 * 86400 else 0.0


class Clock:
    """A stage's stopwatch: from the start of the process (``whole_process``) or from now."""

    def __init__(self, whole_process: bool = False):
        self.start = time.perf_counter() - (process_age() if whole_process else 0.0)

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def stamp(self, metrics: dict, images: int | None = None) -> dict:
        """``metrics`` with ``wall``: seconds so far, and images and images per second if given."""
        s = max(round(self.seconds(), 3), 0.001)  # the rate is that of the figures written
        wall: dict = {"seconds": s}
        if images is not None:
            wall.update(images=int(images), img_per_s=round(images / s, 2))
        return {**metrics, "wall": wall}
