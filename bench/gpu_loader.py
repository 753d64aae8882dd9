"""The training loader alone: decoded and augmented images per second with N worker processes.

    python bench/gpu_loader.py --out $OUT/gpu_loader.json [--workers 4 8 15] [--images 4096]
        [--size 192] [--source-size 320] [--batch 256] [--rounds 2] [--tiny]

``--images`` smooth random JPEGs of ``--source-size`` px (bench/speed.py's; the Naver photos
are larger than grocery's 256 px) go through the train stage's dataset and training transform
(:func:`retrieval.data.loaders.train_transform` at ``--size``) in a DataLoader made as the
pipeline makes it (:func:`retrieval.data.loaders.make_loader`: shuffled, pinned memory on
CUDA), each worker count in its own pass, alternating order over ``--rounds`` rounds, the best
kept. The rate counts from the first batch (worker start-up excluded, reported apart) to the
last; nothing goes to the GPU, so this is the ceiling the loader puts on a training step.
``--tiny``: 64 images at 64 px, workers 0 and 1, one round.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.gpu_monitor import device_info  # noqa: E402
from bench.provenance import save_result  # noqa: E402
from retrieval.data.loaders import ImageDataset, make_loader, train_transform  # noqa: E402
from retrieval.model.network import data_config  # noqa: E402
from retrieval.resources import usable_cores  # noqa: E402
from speed import make_images  # noqa: E402  (bench/speed.py)


def _make(task: tuple) -> list[str]:
    folder, n, seed, size = task
    Path(folder).mkdir()
    return [f"{Path(folder).name}/{name}" for name in make_images(Path(folder), n, seed, size)]


def make_jpegs(folder: Path, n: int, size: int) -> list[str]:
    """``n`` of bench/speed.py's JPEGs under ``folder`` (in sub-folders), made by all the cores."""
    jobs = max(1, min(usable_cores(), n // 64))
    tasks = [(str(folder / f"part{j}"), len(part), j, size)
             for j, part in enumerate(np.array_split(np.arange(n), jobs)) if len(part)]
    if len(tasks) == 1:  # a few: no pool to start
        return _make(tasks[0])
    with multiprocessing.get_context("spawn").Pool(len(tasks)) as pool:
        return [name for names in pool.map(_make, tasks) for name in names]


def rate(ds: ImageDataset, batch: int, workers: int) -> dict:
    loader = make_loader(ds, batch, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t0, seen = time.perf_counter(), 0
    for x, _ in it:
        seen += len(x)
    took = time.perf_counter() - t0
    return {"img_per_s": round(seen / max(took, 1e-9), 1), "first_batch_s": round(t0 - start, 2),
            "images": seen + len(first[0])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, nargs="+", default=[4, 8, 15])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--size", type=int, default=192, help="training image size, px")
    ap.add_argument("--source-size", type=int, default=320, help="side of the generated JPEGs, px")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args(argv)
    if args.tiny:
        args.workers, args.images, args.size, args.source_size, args.batch, args.rounds = [0, 1], 64, 32, 64, 16, 1
    cfg = data_config("tf_efficientnet_lite0")
    best: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        names = make_jpegs(Path(tmp), args.images, args.source_size)
        made = time.perf_counter() - start
        ds = ImageDataset(tmp, names, [0] * len(names), train_transform(args.size, cfg["mean"], cfg["std"], 0))
        for r in range(args.rounds):
            for w in (args.workers if r % 2 == 0 else args.workers[::-1]):
                m = rate(ds, args.batch, w)
                print(f"round {r}: {w} workers {m['img_per_s']} img/s (first batch {m['first_batch_s']} s)", flush=True)
                if str(w) not in best or m["img_per_s"] > best[str(w)]["img_per_s"]:
                    best[str(w)] = m
    result = {"device": device_info(), "cores": usable_cores(), "images": args.images, "size": args.size,
              "source_size": args.source_size, "batch": args.batch, "rounds": args.rounds,
              "generate_s": round(made, 1), "workers": best, "tiny": args.tiny}
    save_result(args.out, result, None if argv is None else ["bench/gpu_loader.py", *argv])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
