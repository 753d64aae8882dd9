"""Where a benchmark figure came from: the one writer of every JSON under ``bench/results/``.

``save_result(path, result)`` writes ``result`` with four keys added, so that any figure quoted
from the file can be traced and re-run:

* ``commit``: ``git rev-parse HEAD`` of the checkout that ran (``+dirty`` when tracked files
  differed from it);
* ``command``: the exact command line (``python bench/x.py --flag ...``);
* ``date``: the UTC date and time the run finished (ISO 8601);
* ``machine``: CPU model, usable cores, memory, GPU (name, or null), Python, torch and numpy
  versions.

``read_result(path)`` loads such a file and refuses one that lacks any of them.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = ("commit", "command", "date", "machine")
LOAD = "load_average_1_5_15_min"  # also stamped, not required: older results lack it


def _git(*args: str, repo: Path = ROOT) -> str:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit(repo: Path = ROOT) -> str:
    """The commit of the checkout at ``repo`` (this one by default), ``+dirty`` when a tracked
    file differs from it ("unknown" outside git)."""
    head = _git("rev-parse", "HEAD", repo=repo) or "unknown"
    return head + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no", repo=repo) else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    """The machine a figure was measured on."""
    info = {"cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "memory_gb": _memory_gb(), "gpu": None, "python": platform.python_version()}
    for name in ("torch", "numpy"):
        module = sys.modules.get(name)
        info[name] = getattr(module, "__version__", None) if module else None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command(argv: list[str] | None = None) -> str:
    """The command line that ran: ``python`` and the script as given, then its arguments."""
    argv = sys.argv if argv is None else argv
    return shlex.join(["python", *argv])


def stamp(result: dict, argv: list[str] | None = None, repo: Path = ROOT) -> dict:
    """``result`` with ``commit`` (of the checkout at ``repo``: the code that ran), ``command``,
    ``date``, ``machine`` and ``load_average_1_5_15_min`` (at the end: was the machine quiet?) added
    (a new dict)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    load = [round(x, 2) for x in os.getloadavg()]
    return {**result, "commit": commit(repo), "command": command(argv), "date": now, "machine": machine(),
            LOAD: load}


def save_result(path: str | Path, result: dict, argv: list[str] | None = None, repo: Path = ROOT) -> dict:
    """Write ``result`` with its provenance as JSON at ``path``; returns what was written. ``repo``:
    the checkout whose code produced the figures, when not this one (a clone a benchmark ran)."""
    out = stamp(result, argv, repo)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return out


def read_result(path: str | Path) -> dict:
    """A benchmark JSON; refused in one line when it lacks a provenance key."""
    data = json.loads(Path(path).read_text())
    missing = [k for k in PROVENANCE if k not in data]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} (write bench results with bench.provenance.save_result)")
    return data
