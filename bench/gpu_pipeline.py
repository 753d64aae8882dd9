"""The default pipeline on a data set with a params profile (the GPU one by default), scored.

    python bench/gpu_pipeline.py --root ../shared/data/grocery --out $OUT/gpu_pipeline.json
        [--profile bench/params_gpu.yaml | --profile none] [--set KEY=VALUE ...]
        [--cpu-reference bench/results/pipeline_grocery_cpu.json] [--workdir DIR]

Every stage of dvc.yaml but demo (check, split, train, extract and rerank per fold, ensemble,
report) runs as its own process in ``--workdir`` (bench/scale.py's :func:`stage_commands`, with
dvc.yaml's flags), with params.yaml's params, ``data.root`` = ``--root``, the ``--profile``'s
keys over them and then the ``--set`` overrides. Per stage: its wall time, its own peak resident
memory (bench/peak.py) and the GPU's memory in use at its peak and mean SM utilisation (NVML,
sampled by bench/gpu_monitor.py; every process's, so the stage's own). The submission is then
validated and scored against ``--root``/truth with ``python -m stages.score`` (no stage reads
the truth). With ``--cpu-reference`` (an earlier result of this script, e.g. the same data with
``--profile none`` on the CPU) the result holds the differences of test mAP@1000 and P@1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import peak  # noqa: E402
from bench.gpu_monitor import Sampler, device_info  # noqa: E402
from bench.provenance import read_result, save_result  # noqa: E402
from bench.scale import dotted, merged, stage_commands  # noqa: E402

MAP, P1 = "map@1000", "p@1"


def run_stages(workdir: Path, params: dict) -> tuple[list[dict], str | None]:
    """Every stage as its own measured process; (one record a stage, the failed stage or None)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    records = []
    for name, argv, _ in stage_commands(params):
        log_path = workdir / "logs" / f"{name}.log"
        with open(log_path, "w") as log, Sampler(period=0.2) as s:
            m = peak.run(argv, cwd=workdir, env=env, stdout=log, stderr=log)
        records.append({"stage": name, "seconds": round(m.seconds, 2), "peak_rss_mb": round(m.peak_mb, 1), **s.summary()})
        print(f"{name:12s} {m.seconds:8.1f} s  peak RSS {m.peak_mb:8.0f} MB  {s.summary()}", flush=True)
        if m.returncode != 0:
            print(f"{name} failed (exit {m.returncode}):\n{log_path.read_text()[-3000:]}", file=sys.stderr, flush=True)
            return records, name
    return records, None


def score(workdir: Path, truth: Path) -> dict:
    sub = workdir / "outputs/submission/submission.csv"
    m = peak.run([sys.executable, "-m", "stages.score", "--submission", str(sub), "--truth", str(truth)],
                 cwd=ROOT, capture=True)
    return {"seconds": round(m.seconds, 2), "returncode": m.returncode, "submission_bytes": sub.stat().st_size,
            **(json.loads(m.stdout) if m.returncode == 0 else {})}


def compare(result: dict, reference: Path) -> dict:
    ref = read_result(reference)["score"]
    got = result["score"]
    return {"reference": str(reference), f"reference_{MAP}": ref[MAP], f"reference_{P1}": ref[P1],
            f"{MAP}_minus_reference": round(got[MAP] - ref[MAP], 4), f"{P1}_minus_reference": round(got[P1] - ref[P1], 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="data set (train/, test/, truth/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--profile", default=str(ROOT / "bench/params_gpu.yaml"), help="params over params.yaml, or none")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cpu-reference", type=Path, help="an earlier result of this script to compare the scores with")
    ap.add_argument("--workdir", type=Path, help="where the run's outputs go (default: a temporary folder)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if not (root / "truth").is_dir():
        raise SystemExit(f"{root}: no truth/ folder to score against")
    profile = {} if args.profile == "none" else yaml.safe_load(Path(args.profile).read_text())
    over = merged(merged(profile, {"data": {"root": str(root)}}), dotted(args.overrides))
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), over)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="gpu-pipeline-"))).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=False)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = {"device": device_info(), "root": str(args.root), "profile": args.profile, "params_over_params_yaml": over}
    result["stages"], failed = run_stages(workdir, params)
    result["pipeline_seconds"] = round(sum(r["seconds"] for r in result["stages"]), 1)
    if failed:
        result["failed"] = failed
    else:
        result["score"] = score(workdir, root / "truth")
        if args.cpu_reference and result["score"]["returncode"] == 0:
            result["against_reference"] = compare(result, args.cpu_reference)
    save_result(args.out, result, None if argv is None else ["bench/gpu_pipeline.py", *argv])
    print(json.dumps({k: result[k] for k in ("pipeline_seconds", "score", "against_reference", "failed") if k in result}))
    return 1 if failed or result["score"]["returncode"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
