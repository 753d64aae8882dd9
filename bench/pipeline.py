"""The whole pipeline on one data set, scored: what the README's results table quotes.

Clones this checkout's HEAD (or ``--rev``) into ``--workdir``, points ``data.root`` at ``--data`` (with any
``--set KEY=VALUE`` overrides), runs ``dvc repro``, scores the submission against
``--data``/truth with ``stages.score`` (the benchmark reads the truth; no stage does), and
writes ``--out`` (through :mod:`bench.provenance`):

* ``test_map``, ``test_p1``: the submission's mAP@1000 and P@1 on the test queries;
* ``cv_map``, ``cv_p1``, ``cv_ci95``, ``cv_class_ci95``: the ensemble's validation figures and its
  95% intervals over queries and over classes;
* ``folds``: each fold's validation mAP@1000 at epoch 0 and of the kept model;
* ``wall_s``: the ``dvc repro`` wall time; ``stage_wall_s``: each stage's own ``wall``.

    python bench/pipeline.py --data ../shared/data/grocery --out bench/results/pipeline_grocery.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.provenance import save_result  # noqa: E402  (after the sys.path set-up)
from bench.scale import dotted, merged  # noqa: E402


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with open(log, "a") as out:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)


def _set_up(workdir: Path, rev: str, data: Path, overrides: list[str]) -> None:
    """A clone of this checkout at ``workdir``, at commit ``rev``, whose params.yaml reads ``data``."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(workdir)], check=True)
    subprocess.run(["git", "checkout", "--quiet", rev], cwd=workdir, check=True)
    params_path = workdir / "params.yaml"
    params = merged(yaml.safe_load(params_path.read_text()), dotted([f"data.root={data}", *overrides]))
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _collect(workdir: Path) -> dict:
    """The run's validation figures and every stage's wall time, from its metrics files."""
    outputs = workdir / "outputs"
    ensemble = _json(outputs / "ensemble/metrics.json")
    cv = ensemble.get("cv", {})
    walls = {str(p.relative_to(outputs).parent if p.name == "metrics.json" else p.relative_to(outputs)):
             _json(p).get("wall") for p in sorted(outputs.rglob("*.json")) if "wall" in _json(p)}
    folds = {p.parent.name: {k: v for k, v in _json(p).items() if "map" in k and not isinstance(v, (dict, list))}
             for p in sorted(outputs.glob("train/fold*/metrics.json"))}
    interval = [cv.get("map@1000_ci95_lo"), cv.get("map@1000_ci95_hi")]
    class_interval = [cv.get("map@1000_class_ci95_lo"), cv.get("map@1000_class_ci95_hi")]
    return {"cv_map": cv.get("map@1000"), "cv_p1": cv.get("p@1"), "cv_ci95": interval, "cv_class_ci95": class_interval,
            "folds": folds, "stage_wall_s": walls}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a data set in the competition layout, with truth/")
    ap.add_argument("--workdir", required=True, help="an empty folder for the clone and its run (kept)")
    ap.add_argument("--rev", default="HEAD", help="the commit to run (default: this checkout's HEAD)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", required=True, help="the JSON to write")
    args = ap.parse_args(argv)
    data, workdir = Path(args.data).resolve(), Path(args.workdir).resolve()
    _set_up(workdir, args.rev, data, args.overrides)
    log = workdir / "bench_pipeline.log"
    start = time.perf_counter()
    _run(["dvc", "repro"], workdir, log)
    wall = time.perf_counter() - start
    score = subprocess.run([sys.executable, "-m", "stages.score", "--submission", "outputs/submission/submission.csv",
                            "--truth", str(data / "truth"), "--per-query", "test_ap.csv"],
                           cwd=workdir, capture_output=True, text=True, check=True)
    test = json.loads(score.stdout)
    result = {"data": data.name, "overrides": args.overrides, "wall_s": round(wall, 1),
              "test_map": test["map@1000"], "test_p1": test["p@1"], "test_queries": test["n_queries"],
              **_collect(workdir)}
    save_result(args.out, result, repo=workdir)  # the clone's commit: this checkout may move on meanwhile
    print(json.dumps({k: result[k] for k in ("data", "test_map", "test_p1", "cv_map", "wall_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
