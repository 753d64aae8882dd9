"""Images per second of extraction and of the training loop with 0 and 1 DataLoader workers (or ``--counts``).

    python bench/workers.py --root ../shared/data/grocery --out bench/results/workers_grocery.json [--counts 0 4 12]

Each measurement is its own process, the worker counts started in alternating order, ``--rounds``
rounds; the figure per count is the best round. Extraction: the pipeline's ``embed_images`` on
the first ``--images`` training images of ``--root`` (the ImageNet model of params.yaml, 224 px,
flip TTA, extract.batch_size, extract.amp), after one warm-up batch. Training: the train stage's
loop (``bench/train_loop.py``'s measurement: fold 0, epoch 1, three warm-up steps, then
``--steps`` steps at ``--size`` px). Every other setting is params.yaml's. Prints and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import save_result  # noqa: E402
from retrieval.config import load_params  # noqa: E402
from retrieval.data.images import scan_train  # noqa: E402
from retrieval.embed.tta import embed_images  # noqa: E402
from retrieval.model.network import build_model  # noqa: E402
from retrieval.resources import compute_device, set_threads  # noqa: E402

WORKERS = (0, 1)  # the default counts compared


def measure_extract(args) -> dict:
    p = load_params(args.params)
    set_threads(p.train.threads)
    model, meta = build_model(p.model)
    model.to(compute_device())  # as the extract stage places it
    images = scan_train(args.root)["image"].tolist()[: args.images]
    xp = p.extract
    embed_images(model, meta, args.root, images[: xp.batch_size], 224, xp.batch_size, True, args.workers, xp.amp, True)
    _, rate = embed_images(model, meta, args.root, images, 224, xp.batch_size, True, args.workers, xp.amp, True)
    return {"img_per_s": rate, "images": len(images)}


def measure_train(args) -> dict:
    import bench.train_loop as tl  # the train stage's loop, as bench/train_loop.py measures it

    params = load_params(args.params)
    path = Path(args.tmp) / f"params_w{args.workers}.yaml"
    raw = params.model_dump()
    raw["train"]["num_workers"] = args.workers
    path.write_text(json.dumps(raw))
    ns = argparse.Namespace(params=str(path), size=args.size, root=args.root, variant="after", steps=args.steps)
    return tl.measure(ns)


def child(args) -> dict:
    return measure_extract(args) if args.what == "extract" else measure_train(args)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--images", type=int, default=256, help="extraction: training images embedded (256)")
    ap.add_argument("--size", type=int, default=192, help="training: image size (192)")
    ap.add_argument("--steps", type=int, default=12, help="training: timed steps (12)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--counts", type=int, nargs="+", default=list(WORKERS), help="worker counts compared (0 1)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--what", choices=("extract", "train"), help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.what:
        print(json.dumps(child(args)))
        return
    counts = args.counts
    runs = {what: {w: [] for w in counts} for what in ("extract", "train")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for what in runs:
                for w in (counts if r % 2 == 0 else counts[::-1]):
                    cmd = [sys.executable, __file__, "--what", what, "--workers", str(w), "--tmp", tmp,
                           "--root", args.root, "--params", args.params, "--images", str(args.images),
                           "--size", str(args.size), "--steps", str(args.steps)]
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    runs[what][w].append(json.loads(out.splitlines()[-1])["img_per_s"])
    result = {"root": args.root, "images": args.images, "size": args.size, "steps": args.steps,
              "rounds": args.rounds, "cpus": os.cpu_count(), "device": str(compute_device()), "runs": runs,
              "best": {what: {w: max(v) for w, v in r.items()} for what, r in runs.items()}}
    for what, best in result["best"].items():
        print(f"{what}: " + ", ".join(f"{w} workers {v:.1f} img/s" for w, v in best.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_result(args.out, result, None if argv is None else ["bench/workers.py", *argv])


if __name__ == "__main__":
    main()
