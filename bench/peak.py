"""Run a command as its own process: its wall time and its own peak resident memory.

Linux carries a process's memory high-water mark across ``exec``: a command started from a big
process reports at least that process's peak as its ``ru_maxrss``, whether it reads it itself
(``getrusage(RUSAGE_SELF)``) or its parent reads it (``os.wait4``); ``python -c pass`` started
from a Python process holding 500 MB reported 510 MB here. So a benchmark's children would all
"use" the benchmark's own peak. :func:`run` therefore starts a small launcher, this file in a
fresh interpreter that imports only the standard library (``python -I -S bench/peak.py``), and
the launcher starts the command and reads its rusage with ``os.wait4``: the command can inherit
only the launcher's few MB (:func:`floor` measures them), whatever the caller holds.

``peak_mb`` is the high-water mark of the command's largest single process: wait4 reports the
maximum over the process and the descendants it waited for (DataLoader workers, torchrun ranks),
not their sum. ``seconds`` is the wall time from the launch to the exit.

    python -I -S bench/peak.py RESULT.json CMD [ARG ...]   # writes {returncode, seconds, peak_mb}
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere


@dataclass
class Measured:
    returncode: int
    seconds: float
    peak_mb: float
    stdout: str | None = None


def run(cmd: list[str], cwd=None, env=None, capture: bool = False, stdout=None, stderr=None) -> Measured:
    """Run ``cmd`` through the launcher; ``capture``: its stdout as text (else ``stdout``/``stderr``
    are passed on: None to inherit, or an open file)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "rusage.json")
        proc = subprocess.run([sys.executable, "-I", "-S", os.path.abspath(__file__), result, *cmd], cwd=cwd,
                              env=env, stdout=subprocess.PIPE if capture else stdout, stderr=stderr,
                              text=capture or None)
        if not os.path.exists(result):
            raise RuntimeError(f"the launcher failed (exit {proc.returncode}) before it could start {cmd[0]}")
        with open(result) as f:
            r = json.load(f)
    return Measured(r["returncode"], r["seconds"], r["peak_mb"], proc.stdout if capture else None)


def floor() -> float:
    """The peak (MB) that ``python -c pass`` reports through the launcher: what any command inherits."""
    return run([sys.executable, "-c", "pass"]).peak_mb


def _launch(result: str, cmd: list[str]) -> int:
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    for sig in (signal.SIGTERM, signal.SIGINT):  # pass a stop on to the command, then report it
        signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as f:
        json.dump({"returncode": code, "seconds": time.perf_counter() - start,
                   "peak_mb": usage.ru_maxrss * _MAXRSS_UNIT / 2 ** 20}, f)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    raise SystemExit(_launch(sys.argv[1], sys.argv[2:]))
