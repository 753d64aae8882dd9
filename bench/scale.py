"""The pipeline at the competition's size: a generated data set, every stage timed and measured.

    python bench/scale.py [--scale 1.0] [--folds 0 1 2] [--size 32] [--epochs 1] [--set KEY=VALUE ...]
                          [--out bench/results/scale.json] [--md FILE.md] [--workdir DIR] [--jobs N] [--seed 0]

1. :func:`generate` writes a data set of the Naver final's size (:data:`FULL`: 73,551 training
   images of 1,383 classes; 18,027 queries and 36,748 references of 1,470 other classes), or a
   ``--scale`` fraction of every count, in the competition layout (``train/<class>/<id>.jpg``,
   ``test/query/<id>.jpg``, ``test/reference/<id>.jpg``, and ``truth/`` for scoring), with
   the demo set's images (synthetic/: its class designs, photos, catalog images and ids, seeded as
   ``make_demo`` seeds them) at ``--size`` px. Every image has its own generator, so the bytes
   do not depend on ``--jobs``; the same seed gives the same files.
2. Runs the stage commands of dvc.yaml with its flags, in ``--workdir/run``: demo (which generates
   nothing: the data root is the generated set), check, split, then train, extract and rerank for
   each fold, ensemble, report. The params are params.yaml's, with ``data.root`` the generated set,
   ``cv.folds`` from ``--folds``, small-image settings (:data:`SMALL_IMAGES`: 32 px, one scale,
   no flip, ``--epochs`` epochs) and ``--set`` overrides. Each stage runs as its own process
   through bench/peak.py: its wall time and its own peak resident memory (not this process's).
3. Validates and scores the submission (``python -m stages.score``), as its own process too.

Writes ``--out`` (JSON) and ``--md`` (a Markdown table; default: ``--out`` with ``.md``), and
prints the table. Images per second: the stage's ``wall.img_per_s`` from its metrics (images over
the whole stage's wall time), and the inner loops' figures (train ``train_img_per_s``: the
training loop alone; extract ``img_per_s``: each set's embedding loop).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import peak  # noqa: E402  (after the sys.path set-up)
from bench.provenance import save_result  # noqa: E402
from retrieval.cli import expand_stages  # noqa: E402
from retrieval.resources import usable_cores  # noqa: E402
from synthetic.dataset import write_set  # noqa: E402


@dataclass(frozen=True)
class Counts:
    train_images: int
    train_classes: int
    queries: int
    references: int
    test_classes: int


FULL = Counts(train_images=73_551, train_classes=1_383, queries=18_027, references=36_748, test_classes=1_470)
CORES = usable_cores()
SMALL_IMAGES = {"train": {"image_size": 32, "val_image_size": 32},
                "extract": {"image_size": 32, "scales": [1.0], "flip_tta": False}}


def scaled(scale: float, full: Counts = FULL) -> Counts:
    """Every count of ``full`` times ``scale`` (rounded, at least 1); refused if a class would be
    left with too few images (2 a training class, 1 query and 1 reference a test class)."""
    c = Counts(**{k: max(1, round(v * scale)) for k, v in asdict(full).items()})
    if c.train_images < 2 * c.train_classes or c.queries < c.test_classes or c.references < c.test_classes:
        raise ValueError(f"scale {scale}: too few images for the classes: {c}")
    return c


def spread(total: int, n: int) -> list[int]:
    """``total`` split over ``n`` classes as evenly as it goes, the larger shares first."""
    return [total // n + (i < total % n) for i in range(n)]


def generate(out: str | Path, counts: Counts, seed: int, size: int, jobs: int = 1) -> dict:
    """Write the data set of ``counts`` under ``out`` (a new or empty folder) with
    :func:`synthetic.dataset.write_set`; return the counts written and the time taken. Classes are
    named and their images made as the demo set's (``product-00``, .., hashed ids, a test class's
    last reference its catalog image), the test classes after the training ones."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty")
    start = time.perf_counter()
    plan = [(n, 0, 0) for n in spread(counts.train_images, counts.train_classes)]
    plan += [(0, nq, nr) for nq, nr in zip(spread(counts.queries, counts.test_classes),
                                           spread(counts.references, counts.test_classes))]
    n = write_set(out, seed, size, plan, jobs)
    seconds = time.perf_counter() - start
    return {"train_images": n["train"], "queries": n["query"], "references": n["reference"],
            "train_classes": counts.train_classes, "test_classes": counts.test_classes, "size": size,
            "seed": seed, "jobs": jobs, "seconds": round(seconds, 2), "img_per_s": round(sum(n.values()) / seconds, 1),
            "bytes": sum(f.stat().st_size for f in out.rglob("*.jpg"))}


# -- the pipeline, stage by stage ----------------------------------------------------------

def merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def dotted(assignments: list[str]) -> dict:
    """``["train.epochs=2", "extract.scales=[1.0, 1.25]"]`` as a nested dict of YAML values."""
    out: dict = {}
    for a in assignments:
        key, sep, value = a.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {a!r}: expected KEY=VALUE")
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return out


def stage_commands(params: dict, dvc_yaml: Path = ROOT / "dvc.yaml") -> list[tuple[str, list[str], list[str]]]:
    """(name, argv, metrics files) of every stage in dvc.yaml's order, as
    :func:`retrieval.cli.expand_stages` expands them with ``params`` (a ``foreach`` stage: one for
    each fold of cv.folds), ``python`` this interpreter. demo generates nothing when data.root is
    another set; it writes the metrics the report reads."""
    out = []
    for name, s in expand_stages(dvc_yaml.read_text(), params).items():
        argv = [sys.executable if k == 0 and a == "python" else a for k, a in enumerate(s["cmd"])]
        out.append((name, argv, s["metrics"]))
    return out


def _stage_rates(metrics: dict) -> dict:
    """The images-per-second figures a stage's metrics hold."""
    rates = {}
    if "img_per_s" in metrics.get("wall", {}):
        rates["img_per_s"] = metrics["wall"]["img_per_s"]
    if "train_img_per_s" in metrics:
        rates["loop_img_per_s"] = round(metrics["train_img_per_s"], 1)
    if isinstance(metrics.get("img_per_s"), dict):
        rates["loop_img_per_s"] = metrics["img_per_s"]
    return rates


def run_pipeline(workdir: Path, params: dict, log_dir: Path) -> tuple[list[dict], str | None]:
    """Every stage as its own measured process in ``workdir``; (one record a stage, failed stage)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    records = []
    for name, argv, metrics_files in stage_commands(params):
        with open(log_dir / f"{name}.log", "w") as log:
            m = peak.run(argv, cwd=workdir, env=env, stdout=log, stderr=log)
        rec = {"stage": name, "seconds": round(m.seconds, 2), "peak_mb": round(m.peak_mb, 1)}
        for path in metrics_files:
            if m.returncode == 0:
                metrics = json.loads((workdir / path).read_text())
                rec.update(stage_seconds=metrics["wall"]["seconds"], **_stage_rates(metrics))
        records.append(rec)
        print(f"{name:12s} {rec['seconds']:9.1f} s  peak {rec['peak_mb']:8.1f} MB"
              + (f"  {rec['img_per_s']:8.1f} img/s" if "img_per_s" in rec else ""), flush=True)
        if m.returncode != 0:
            tail = (log_dir / f"{name}.log").read_text()[-3000:]
            print(f"{name} failed (exit {m.returncode}); the end of {log_dir / (name + '.log')}:\n{tail}", file=sys.stderr)
            return records, name
    return records, None


def table(result: dict) -> str:
    """The Markdown table of a result."""
    g, rows = result["generate"], []
    rows.append(f"| generate the data ({g['train_images'] + g['queries'] + g['references']:,} images, "
                f"{g['jobs']} processes) | {g['seconds']:.1f} | | {g['img_per_s']:.0f} |")
    for r in result["stages"]:
        rate = r.get("img_per_s")
        loop = r.get("loop_img_per_s")
        if isinstance(loop, dict):
            loop = ", ".join(f"{k} {v:.0f}" for k, v in loop.items())
        elif loop is not None:
            loop = f"training loop {loop:.0f}"
        cell = "" if rate is None else f"{rate:.0f}" + (f" ({loop})" if loop else "")
        rows.append(f"| {r['stage']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {cell} |")
    rows.append(f"| **pipeline** | **{result['pipeline_seconds']:.1f}** | **{result['max_peak_mb']:.0f}** | |")
    if "score" in result:
        s = result["score"]
        rows.append(f"| validate + score the submission ({result['submission_bytes']:,} bytes) | "
                    f"{s['seconds']:.1f} | {s['peak_mb']:.0f} | |")
    head = ["| step | wall s | peak RSS MB (its own) | images/s (inner loops) |", "|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of every count of the full size (1.0)")
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="cv.folds to run (default: params.yaml's)")
    ap.add_argument("--size", type=int, default=32, help="image side, px (32; at least 32)")
    ap.add_argument("--epochs", type=int, default=1, help="train.epochs (1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override, e.g. train.batch_size=64 (repeatable; YAML values)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated data (0)")
    ap.add_argument("--jobs", type=int, default=CORES, help=f"processes generating the data ({CORES})")
    ap.add_argument("--workdir", help="folder for the data and the run (default: a temporary one, removed)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/scale.json"))
    ap.add_argument("--md", help="Markdown table to write (default: --out with .md)")
    args = ap.parse_args(argv)
    counts = scaled(args.scale)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scale-")).resolve()
    data, run = workdir / "data", workdir / "run"
    if run.exists():
        raise SystemExit(f"{run} exists: give a new --workdir")
    over = {"data": {"root": str(data)}, "train": {"epochs": args.epochs}}
    if args.folds is not None:
        over["cv"] = {"folds": args.folds}
    params = merged(merged(merged(base, SMALL_IMAGES), over), dotted(args.overrides))
    result = {"scale": args.scale, "counts": asdict(counts), "params_override": merged(merged(SMALL_IMAGES, over),
                                                                                        dotted(args.overrides)),
              "load": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
              "launcher_floor_mb": round(peak.floor(), 1)}
    result["params_override"]["data"]["root"] = "<workdir>/data"
    try:
        print(f"generating {counts} at {args.size} px in {data}", flush=True)
        result["generate"] = generate(data, counts, args.seed, args.size, args.jobs)
        print(f"generated in {result['generate']['seconds']:.1f} s", flush=True)
        (run / "logs").mkdir(parents=True)
        (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result["stages"], failed = run_pipeline(run, params, run / "logs")
        result["pipeline_seconds"] = round(sum(r["seconds"] for r in result["stages"]), 1)
        result["max_peak_mb"] = max(r["peak_mb"] for r in result["stages"])
        if failed:
            result["failed"] = failed
        else:
            sub = run / "outputs/submission/submission.csv"
            result["submission_bytes"] = sub.stat().st_size
            m = peak.run([sys.executable, "-m", "stages.score", "--submission", str(sub), "--truth", str(data / "truth")],
                         cwd=ROOT, capture=True)
            result["score"] = {"seconds": round(m.seconds, 2), "peak_mb": round(m.peak_mb, 1), "returncode": m.returncode,
                               **(json.loads(m.stdout) if m.returncode == 0 else {})}
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["load"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["bench_process_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out = Path(args.out)
    save_result(out, result, None if argv is None else ["bench/scale.py", *argv])
    md = Path(args.md) if args.md else out.with_suffix(".md")
    text = table(result)
    md.write_text(text)
    print(text + f"wrote {out} and {md}")
    return 1 if result.get("failed") or result.get("score", {}).get("returncode") else 0


if __name__ == "__main__":
    raise SystemExit(main())
