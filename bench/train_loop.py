"""Training images per second of the real loop (loader, augmentation and all), before and after
issue 16's changes, on a data set of your choice, beside extraction's of the same images.

    python bench/train_loop.py --root ../shared/data/grocery --size 192 --steps 12 --rounds 2 \
        --out bench/results/train_loop_grocery.json

Each measurement is its own process, the variants started in alternating order: the pipeline's
training run (``retrieval.train.run.Run``: the fold-0 split of ``--root``'s training images,
params.yaml's params at ``--size`` px), three warm-up steps, then ``--steps`` timed steps of its
epoch-1 loader and optimiser step. ``after`` is the pipeline's step; ``no_small_maps`` is it
without :mod:`retrieval.model.small_maps` (oneDNN's convolutions on maps of a few pixels too);
``before`` puts back what the step was before issue 16: bf16 autocast, AdamW's per-parameter
loop, glibc's allocator as it starts, no small-map path. ``extract`` is the extraction loop
(``retrieval.embed.tta.embed_images`` with params.yaml's extract settings at ``--size`` px, one
scale, no flip, as ``bench/scale.py`` runs it) over the same number of the fold's training
images, after a warm-up pass. The figure per variant is the best round. Prints and writes JSON.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import retrieval.train.run as loop  # noqa: E402
from bench.provenance import save_result  # noqa: E402
from retrieval.config import load_params  # noqa: E402
from retrieval.data.folds import fold_parts, make_folds  # noqa: E402
from retrieval.data.images import IMAGE, scan_train  # noqa: E402
from retrieval.embed.tta import embed_images  # noqa: E402
from retrieval.model.network import autocast_dtype, build_model  # noqa: E402
from retrieval.resources import compute_device, loader_workers, set_threads  # noqa: E402

VARIANTS = ("before", "no_small_maps", "after", "extract")


def put_back_before() -> None:
    """The step as it was before issue 16: no allocator setting, AdamW's per-parameter loop."""
    adamw = torch.optim.AdamW
    loop.keep_freed_memory = lambda: False
    loop.torch.optim.AdamW = lambda *a, fused=None, **k: adamw(*a, **k)


def measure(args) -> dict:
    p = load_params(args.params)
    tp = p.train.model_copy(update={"image_size": args.size, **({"amp": "bf16"} if args.variant == "before" else {})})
    p = p.model_copy(update={"train": tp, "data": p.data.model_copy(update={"root": args.root})})
    folds = make_folds(scan_train(args.root), p.cv.n_folds, p.split.query_fraction, p.seed)
    if args.variant == "extract":
        return measure_extraction(p, folds, args)
    if args.variant == "before":
        put_back_before()
    if args.variant in ("before", "no_small_maps"):
        loop.use_small_map_convs = lambda model: 0
    run = loop.Run(loop.Job(p, folds, args.root, 0))
    run._prepare_epoch(1)
    batches = iter(run.loader)
    for _ in range(3):
        run._step(*next(batches), 1, 0)
    start, seen = time.perf_counter(), 0
    for _ in range(args.steps):
        x, y = next(batches)
        run._step(x, y, 1, 0)
        seen += len(x)
    return {"img_per_s": seen / (time.perf_counter() - start), "autocast": str(run.dtype or "fp32"),
            "threads": torch.get_num_threads(), "num_workers": loader_workers(tp.num_workers), "batch_size": tp.batch_size}


def measure_extraction(p, folds, args) -> dict:
    """Extraction's images per second over as many of fold 0's training images as the timed steps see."""
    xp = p.extract
    set_threads(0)
    model, meta = build_model(p.model)
    model.to(compute_device())  # as the extract stage places it
    images = fold_parts(folds, 0)[0][IMAGE].tolist()[:args.steps * p.train.batch_size]
    embed = functools.partial(embed_images, model, meta, args.root, images, args.size, xp.batch_size,
                              False, xp.num_workers, xp.amp, True)
    embed()  # warm-up
    return {"img_per_s": embed()[1], "autocast": str(autocast_dtype(xp.amp, compute_device()) or "fp32"),
            "threads": torch.get_num_threads(), "num_workers": loader_workers(xp.num_workers), "batch_size": xp.batch_size}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args)))
        return
    runs: dict[str, list] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            cmd = [sys.executable, __file__, "--variant", v, "--root", args.root, "--params", args.params,
                   "--size", str(args.size), "--steps", str(args.steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[v].append(json.loads(out.splitlines()[-1]))
    best = {v: max(rs, key=lambda m: m["img_per_s"]) for v, rs in runs.items()}
    result = {"root": args.root, "size": args.size, "steps": args.steps, "rounds": args.rounds,
              "cpus": os.cpu_count(), "best": best, "runs": runs,
              "speed_up": best["after"]["img_per_s"] / best["before"]["img_per_s"],
              "small_maps_speed_up": best["after"]["img_per_s"] / best["no_small_maps"]["img_per_s"],
              "extraction_over_training": best["extract"]["img_per_s"] / best["after"]["img_per_s"]}
    for v, m in best.items():
        print(f"{v}: {m['img_per_s']:.1f} img/s ({m['autocast']}, {m['threads']} threads, "
              f"{m['num_workers']} loader worker)")
    print(f"after / before: {result['speed_up']:.2f}x; after / no_small_maps: "
          f"{result['small_maps_speed_up']:.2f}x; extraction / training (after): {result['extraction_over_training']:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_result(args.out, result, None if argv is None else ["bench/train_loop.py", *argv])


if __name__ == "__main__":
    main()
