"""The tables ``docs/build.py`` writes between ``<!-- table: NAME -->`` markers, built from the
JSON files under ``bench/results/`` (each read with ``bench.provenance.read_result``, so a figure
without its commit, command, date and machine cannot reach a document).

``results``: the pipeline's scores, one row per run file. ``bench-SCRIPT``: the latest result of
``bench/SCRIPT.py`` (the newest ``date`` among the files whose ``command`` runs that script);
``bench-SCRIPT-files``: all of them, with their commands. ``result:FILE``: the table of one file
(a path under bench/results/), by its script's view.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

from bench.provenance import LOAD, PROVENANCE, read_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"
SCRIPTS = ("amp", "index", "rerank", "scale", "speed", "train_loop", "train_step", "workers")  # with a view
PROVENANCE_KEYS = {*PROVENANCE, LOAD, "backfilled"}


def num(v, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def link(path: Path, doc_dir: Path) -> str:
    """A Markdown link to ``path`` from a document in ``doc_dir``."""
    return f"[json]({os.path.relpath(path, doc_dir)})"


def machine(m: dict) -> str:
    """``2 cores (CPU model)``, plus the GPU where there was one."""
    cpu = m.get("cpu") or "?"
    text = f"{m.get('cores', '?')} cores" + ("" if cpu.startswith("not recorded") else f" ({cpu})")
    return text + (f", {m['gpu']}" if m.get("gpu") else ", no GPU")


def grid(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(num(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def source(path: Path, r: dict) -> str:
    """The file, and how it came to be."""
    note = " (provenance backfilled)" if r.get("backfilled") else ""
    return (f"`{rel(path)}`: `{r['command']}` at {r['commit'][:7]}, {r['date'][:10]}, "
            f"{machine(r['machine'])}{note}")


# ---- results: the pipeline's scores

def _pipeline_row(name: str, path: Path, doc_dir: Path) -> list:
    r = read_result(path)
    ci = r.get("cv_ci95")
    cv = num(r.get("cv_map")) + (f" [{num(ci[0])}, {num(ci[1])}]" if ci else "")
    folds = r.get("folds") or {}  # bench/pipeline.py: {"fold0": {its validation figures}, ...}
    folds = ", ".join(str(f).removeprefix("fold") for f in folds)
    return [name, folds, num(r.get("test_map")), num(r.get("test_p1")), cv,
            f"{r['wall_s']:,.0f} s" if "wall_s" in r else "", machine(r["machine"]),
            f"{link(path, doc_dir)}: `{r['command']}`"]


def _scale_row(name: str, path: Path, doc_dir: Path) -> list:
    r = read_result(path)
    folds = r.get("params_override", {}).get("cv", {}).get("folds")
    folds = ", ".join(map(str, folds)) if folds else "all"
    score = r.get("score", {})
    return [name, str(folds), num(score.get("map@1000")), num(score.get("p@1")), "",
            f"{r['pipeline_seconds']:,.0f} s" if "pipeline_seconds" in r else "", machine(r["machine"]),
            f"{link(path, doc_dir)}: `{r['command']}`"]


def results(doc_dir: Path = ROOT) -> str:
    """One row per pipeline run file that exists: grocery, caltech, competition size, the GPU run."""
    rows = []
    for data in ("grocery", "caltech"):
        path = RESULTS / f"pipeline_{data}.json"
        if path.is_file():
            rows.append(_pipeline_row(data, path, doc_dir))
    if (RESULTS / "scale.json").is_file():
        rows.append(_scale_row("generated, competition size (bench/scale.py)", RESULTS / "scale.json", doc_dir))
    for path in sorted(RESULTS.glob("scale_h200_*.json")):
        r = read_result(path)
        rows.append(_scale_row(f"generated, {r['scale']:g} of competition size (bench/scale.py)", path, doc_dir))
    return grid(["data set", "folds", "test mAP@1000", "P@1", "CV mAP@1000 [95% CI]", "wall time", "machine",
                 "source and command"], rows)


# ---- bench-SCRIPT: the latest result of each benchmark script

def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + str(k): v})
    return out


def transpose(d: dict) -> dict:
    """``{row: {column: value}}`` as ``{column: {row: value}}`` (inner dicts flattened first)."""
    out: dict = {}
    for row, cols in d.items():
        for col, v in flat(cols).items():
            out.setdefault(col, {})[row] = v
    return out


def matrix(d: dict, first: str) -> str:
    """``{row: {column: value}}`` (inner dicts flattened to dotted columns) as a table; count columns in order."""
    rows = {k: flat(v) if isinstance(v, dict) else {"value": v} for k, v in d.items()}
    if all(str(c).isdigit() for r in rows.values() for c in r):
        rows = {k: dict(sorted(r.items(), key=lambda kv: int(kv[0]))) for k, r in rows.items()}
    cols = [c for c in dict.fromkeys(c for r in rows.values() for c in r) if not isinstance(
        next(r[c] for r in rows.values() if c in r), (list, dict))]
    return grid([first, *cols], [[k, *(r.get(c) for c in cols)] for k, r in rows.items()])


def _rerank(r: dict) -> str:
    names = [k.removesuffix("_s") for k, v in r.items() if k.endswith("_s") and not isinstance(v, list)]
    floor = r.get("matmul_floor_s")
    rows = {m: {"s": r[f"{m}_s"], "x floor": r[f"{m}_s"] / floor if floor else None,
                "peak GB": r.get(f"{m}_peak_gb"), "mAP": r.get(f"{m}_map")} for m in names}
    return matrix(rows, "method")


def _scale(r: dict) -> str:
    from bench.scale import table
    return table(r)


def _train_step(r: dict) -> str:
    rows = {}
    for alloc, sizes in r["allocators"].items():
        for size, m in sizes.items():
            for variant, phases in m["phases_s"].items():
                rows.setdefault(variant, {})[f"{alloc} {size} px step s"] = phases["step"]
    return matrix(rows, "variant")


def scalars(r: dict) -> str:
    """Any other script's result: its top-level numbers and words, provenance aside."""
    rows = [[k, v] for k, v in r.items() if k not in PROVENANCE_KEYS and not isinstance(v, (dict, list))]
    return grid(["key", "value"], rows)


def script_of(r: dict) -> str | None:
    """The bench script a result's command ran (``bench/NAME.py``), or None."""
    m = re.search(r"bench/(\w+)\.py", r["command"])
    return m.group(1) if m else None


def view(script: str, r: dict) -> str:
    return VIEWS.get(script, scalars)(r)


def _diff(c: dict) -> str:
    lo, hi = c["class_diff_ci95"]
    return f"{c['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _chains(r: dict) -> str:
    """bench/chains.py: each variant's validation and test mAP@1000, and its paired difference from
    the baseline with the 95% interval over classes; P@1's difference on test."""
    base = r["baseline"]
    rows = [[f"`{name}`", num(v["valid_map"], 4), _diff(v[f"vs_{base}"]["valid_map"]) if name != base else "",
             num(v["test_map"], 4), _diff(v[f"vs_{base}"]["test_map"]) if name != base else "",
             num(v["test_p1"], 4), _diff(v[f"vs_{base}"]["test_p1"]) if name != base else ""]
            for name, v in sorted(r["variants"].items(), key=lambda nv: (nv[0] != base, nv[0]))]
    return grid(["variant", "validation mAP@1000", "vs baseline", "test mAP@1000", "vs baseline", "test P@1",
                 "vs baseline"], rows)


VIEWS = {
    "amp": lambda r: matrix({k: r[k] for k in ("off", "bf16")}, "precision"),
    "chains": _chains,
    "extract_stage": lambda r: matrix(transpose({k: r[k] for k in ("stage_img_per_s", "speedup_vs_torch")}),
                                      "runtime"),
    "index": lambda r: matrix({k: {c: x for c, x in v.items() if c != "params"} for k, v in r["methods"].items()}, "index"),
    "rerank": _rerank,
    "scale": _scale,
    "speed": lambda r: matrix(transpose(r["backbones"]), "img/s: loop.variant"),
    "train_loop": lambda r: matrix(r["best"], "variant"),
    "train_step": _train_step,
    "workers": lambda r: matrix(r["best"], "loop (img/s by workers)"),
}


def by_script() -> dict[str, list[tuple[Path, dict]]]:
    """Every result file, by the bench script its command ran, newest first."""
    out: dict[str, list] = {}
    for path in sorted(RESULTS.rglob("*.json")):
        r = read_result(path)
        if script_of(r):
            out.setdefault(script_of(r), []).append((path, r))
    return {s: sorted(v, key=lambda pr: (pr[1]["date"], commit_time(pr[1]["commit"]), "+dirty" not in pr[1]["commit"],
                                         rel(pr[0])), reverse=True) for s, v in out.items()}


@functools.cache
def commit_time(commit: str) -> int:
    """When ``commit`` was made (0 when git does not know it): breaks ties between runs of one date."""
    done = subprocess.run(["git", "show", "-s", "--format=%ct", commit.removesuffix("+dirty")], cwd=ROOT,
                          capture_output=True, text=True)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


def bench_table(script: str) -> str:
    files = by_script().get(script)
    if not files:
        return f"(no result of bench/{script}.py under bench/results/)\n"
    path, r = files[0]
    return f"Latest: {source(path, r)}.\n\n" + view(script, r)


def bench_files(script: str) -> str:
    """Every result file of ``script``, newest first, with its command."""
    rows = [[f"`{rel(p)}`", r["date"][:10], r["commit"][:7], f"`{r['command']}`", machine(r["machine"])]
            for p, r in by_script().get(script, [])]
    return grid(["file", "date", "commit", "command", "machine"], rows)


def result_table(name: str) -> str:
    """One file's table (``result:rerank_naver.json``: bench/results/rerank_naver.json), by its script's view."""
    path = RESULTS / name
    r = read_result(path)
    if script_of(r) is None:
        raise ValueError(f"{rel(path)}: its command {r['command']!r} runs no bench/NAME.py")
    return f"{source(path, r)}.\n\n" + view(script_of(r), r)


def render(name: str, doc_dir: Path = ROOT) -> str:
    """Table ``name``: one of ``TABLES``, ``bench-SCRIPT[-files]`` for any script with results, or
    ``result:FILE`` for one file under bench/results/."""
    if name.startswith("result:"):
        return result_table(name.removeprefix("result:"))
    m = re.fullmatch(r"bench-(\w+?)(-files)?", name)
    if m and m.group(1) in by_script():
        return (bench_files if m.group(2) else bench_table)(m.group(1))
    if name not in TABLES:
        raise KeyError(name)
    return TABLES[name](doc_dir)


TABLES = {"results": results}
TABLES.update({f"bench-{s}": (lambda doc_dir, s=s: bench_table(s)) for s in SCRIPTS})
TABLES.update({f"bench-{s}-files": (lambda doc_dir, s=s: bench_files(s)) for s in SCRIPTS})
