"""A search's forwards on the CPU cores: one run over ORT's intra-op threads, or pieces run at once.

    python bench/onnx_threads.py --bundle outputs/bundle --out bench/results/onnx_threads.json [--reps 40]

For each fold model of ``--bundle`` and each TTA input size, the batch of an image and its
mirror (2 x 3 x S x S, seeded noise) runs as a search runs it, in one of three ways, alternated
rep by rep (the machine's slow spells hit all), every core used (:func:`usable_cores`):

* ``intra_op``: one ORT run with ``intra_op_num_threads`` = cores (ORT's spinning default);
* ``intra_op_nospin``: the same with ``session.intra_op.allow_spinning`` 0;
* ``parallel``: :class:`retrieval.bundle.onnx_model.ParallelSession` (what the bundle runs):
  single-threaded runs of the image and of its mirror at once on the pool's threads.

Saves each way's p50, p10 and min milliseconds of a whole search's forwards (every fold and size),
and the largest difference of its outputs from ``parallel``'s.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import save_result  # noqa: E402
from retrieval.bundle.onnx_model import INPUT, OUTPUT, onnx_session  # noqa: E402
from retrieval.resources import usable_cores  # noqa: E402


def intra_op_session(path: Path, threads: int, spin: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT], {INPUT: x})[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args(argv)
    settings = json.loads((args.bundle / "settings.json").read_text())
    files = [args.bundle / m["onnx"] for f in settings["folds"] for m in f["members"]]
    cores = usable_cores()
    ways = {"intra_op": [intra_op_session(p, cores, True) for p in files],
            "intra_op_nospin": [intra_op_session(p, cores, False) for p in files],
            "parallel": [onnx_session(p, cores).run for p in files]}
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3, s, s)).astype(np.float32) for s in settings["tta_sizes"]]
    times, outs = {w: [] for w in ways}, {}
    for rep in range(args.reps + 1):  # the first: warm-up
        for way, runs in ways.items():
            start = time.perf_counter()
            outs[way] = [run(x) for run in runs for x in xs]
            if rep:
                times[way].append((time.perf_counter() - start) * 1000)
    out = {"bundle": str(args.bundle), "models": len(files), "tta_sizes": settings["tta_sizes"], "cores": cores,
           "reps": args.reps, "batch": 2,
           "search_forwards_ms": {w: {"p50": round(float(np.median(t)), 1), "p10": round(float(np.percentile(t, 10)), 1),
                                      "min": round(float(np.min(t)), 1)} for w, t in times.items()},
           "max_abs_diff_vs_parallel": {w: float(max(np.abs(a - b).max() for a, b in zip(o, outs["parallel"])))
                                        for w, o in outs.items()}}
    print(json.dumps(out, indent=1))
    save_result(args.out, out, None if argv is None else ["bench/onnx_threads.py", *map(str, argv)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
