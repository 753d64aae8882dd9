"""The training step on one GPU: where its time goes (profiler), and images/s per batch size and variant.

    python bench/gpu_step.py --out $OUT/gpu_step.json [--size 192] [--batches 32 128 256]
        [--variants eager_sync eager compile compile_ro] [--compile-batches 256] [--steps 30]
        [--rounds 2] [--profile-steps 5] [--freeze-stages 2] [--classes 1383] [--tiny]

The step is the train stage's (:class:`retrieval.train.run.LossOf` under its autocast: bf16 on
CUDA; channels-last; AdamW over :func:`retrieval.train.optim.param_groups`, fused; the
warm-up + cosine schedule stepped each step), on one batch of random images held on the device,
so the loader is out of it (bench/gpu_loader.py measures the loader alone). Learning rates scale
linearly with the batch (``lr`` and ``head_lr`` x batch / 32): it changes no timing, but it is
the rule a larger batch would train with. Variants:

- ``eager_sync``: the train loop's step as it is: ``torch.isfinite(loss)`` and ``loss.item()``
  every step, two host syncs;
- ``eager``: no per-step sync: the loss summed on the device, read once after the timed steps;
- ``compile``: as ``eager``, the model and loss under ``torch.compile`` (default mode);
- ``compile_ro``: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs).

The compiled variants run only at ``--compile-batches`` (each batch size is a compilation).
Each variant is warmed up (compilation included: its seconds are reported), then timed in
``--rounds`` rounds in alternating order with the others of its group (the eager variants of one
batch size; the compiled ones beside ``eager`` at theirs), ``--steps`` steps each after a device
sync; the figure is the best round. The JSON is rewritten after each group, so a timeout (a
long compilation) loses only the group it cuts. SM utilisation is sampled through NVML over each timed round
(bench/gpu_monitor.py). The profile: ``--profile-steps`` steps of ``eager_sync`` and ``eager``
at the first batch size under torch.profiler: aten operators a step, host (CPU) time a step,
the GPU kernels' time a step, the top operators by host time.

``--tiny`` (the CPU smoke run of bench/gpu.sh): 32 px, batches 2 and 4, 2 steps, 1 round, the
eager variants, no pretrained weights.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_monitor import Sampler, device_info, sync  # noqa: E402
from bench.provenance import save_result  # noqa: E402
from retrieval.config import ModelParams, TrainParams  # noqa: E402
from retrieval.model.losses import metric_loss  # noqa: E402
from retrieval.model.network import autocast_dtype, build_model, fix_bn_statistics, freeze_stages, set_train_mode  # noqa: E402
from retrieval.train.run import LossOf  # noqa: E402
from retrieval.train.optim import group_schedules, param_groups  # noqa: E402

VARIANTS = {"eager_sync": (None, True), "eager": (None, False), "compile": ("default", False),
            "compile_ro": ("reduce-overhead", False)}  # name: (torch.compile mode, sync every step)
BASE_BATCH = 32  # params.yaml's train.batch_size: the learning rates are params.yaml's at this batch


class Step:
    """The train stage's model, loss, optimiser and schedule at one batch size, as one variant."""

    def __init__(self, variant: str, batch: int, args, device: torch.device):
        self.mode, self.sync = VARIANTS[variant]
        torch.manual_seed(0)
        base = TrainParams()
        scale = batch / BASE_BATCH  # the linear scaling rule
        tp = TrainParams(lr=base.lr * scale, head_lr=base.head_lr * scale, freeze_stages=args.freeze_stages)
        mp = ModelParams(pretrained="none" if args.tiny else ModelParams().pretrained)
        model, _ = build_model(mp)
        frozen = freeze_stages(model, tp.freeze_stages)
        model.to(device).to(memory_format=torch.channels_last)
        set_train_mode(model, frozen)
        if tp.freeze_bn:
            fix_bn_statistics(model)
        loss_fn = metric_loss(mp, tp, args.classes).to(device)
        groups = param_groups(model, loss_fn, tp)
        self.opt = torch.optim.AdamW(groups, weight_decay=tp.weight_decay, fused=device.type in ("cpu", "cuda"))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, group_schedules(groups, 10**6, 100, 0))
        dtype = autocast_dtype(tp.amp, device, training=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.loss = LossOf(model, loss_fn, device, dtype, tp.channels_last)
        if self.mode is not None:
            self.loss = torch.compile(self.loss, mode=self.mode)
        self.lr = {"lr": tp.lr, "head_lr": tp.head_lr}
        self.loss_sum = torch.zeros((), device=device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        loss = self.loss(x, y)
        if self.sync and not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()}")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.sync:
            loss.item()
        else:
            self.loss_sum += loss.detach()


def batch(n: int, size: int, classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 3, size, size, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, classes, (n,), generator=g).to(device)


def timed(step: Step, data, steps: int) -> dict:
    """``steps`` steps after a sync, to the last kernel's end: images/s and the SM utilisation."""
    sync()
    with Sampler() as s:
        for _ in range(steps):
            step(*data)
        step.loss_sum.item()  # the one read of the loss (a sync)
        sync()
    return {"img_per_s": round(len(data[1]) * steps / s.seconds, 1), "ms_per_step": round(1000 * s.seconds / steps, 2),
            **s.summary()}


def profile(step: Step, data, steps: int) -> dict:
    """aten operators, host time and GPU kernel time a step; the top operators by host time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sync()
    with torch_profile(activities=acts) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step(*data)
        sync()
        wall = time.perf_counter() - start
    ev = prof.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in ev)
    return {"steps": steps, "wall_ms_per_step_profiled": round(1000 * wall / steps, 2),
            "aten_ops_per_step": round(sum(e.count for e in ev if e.key.startswith("aten::")) / steps),
            "host_self_ms_per_step": round(sum(e.self_cpu_time_total for e in ev) / 1000 / steps, 2),
            "gpu_kernel_ms_per_step": round(device_us / 1000 / steps, 2),
            "top_host_ops": [{"op": e.key, "calls_per_step": round(e.count / steps, 1),
                              "host_self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 3)}
                             for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:15]]}


def prepare(key: str, args, device: torch.device, data, out: dict) -> Step | None:
    """The variant ``key`` (``variant@batch``) built and warmed up (compiled), profiled if asked."""
    v, b = key.split("@")
    try:
        step = Step(v, int(b), args, device)
        start = time.perf_counter()
        for _ in range(args.warmup):
            step(*data)
        step.loss_sum.item()
        sync()
        out["warmup_s"][key], out["lr"][key] = round(time.perf_counter() - start, 1), step.lr
        print(f"{key}: warmed up in {out['warmup_s'][key]} s", flush=True)
        if int(b) == args.batches[0] and v in ("eager_sync", "eager") and args.profile_steps:
            p = out["profile"][key] = profile(step, data, args.profile_steps)
            print(f"{key}: profile {p['aten_ops_per_step']} aten ops, host {p['host_self_ms_per_step']} ms, "
                  f"kernels {p['gpu_kernel_ms_per_step']} ms a step", flush=True)
        return step
    except Exception as e:  # one variant failing (a compile, memory) does not lose the others
        out["errors"][key] = f"{type(e).__name__}: {e}"[:2000]
        traceback.print_exc()
        return None


def measure(args, device: torch.device, save) -> dict:
    """Groups of variants, each timed in alternating rounds and saved (``save(out)``) before the
    next: the eager variants at each batch size, then the compiled ones beside eager at theirs
    (a compilation cut by the step's timeout loses only its group)."""
    out: dict = {"profile": {}, "steps": {}, "warmup_s": {}, "errors": {}, "lr": {}}
    eager = [v for v in args.variants if VARIANTS[v][0] is None]
    compiled = [v for v in args.variants if VARIANTS[v][0] is not None]
    groups = [[f"{v}@{b}" for v in eager] for b in args.batches]
    groups += [[f"eager@{b}"] * ("eager" in eager) + [f"{v}@{b}" for v in compiled] for b in args.compile_batches if compiled]
    built: dict = {}
    for group in groups:
        for key in group:
            b = int(key.split("@")[1])
            if key not in built:
                data = batch(b, args.size, args.classes, device)
                built[key] = (prepare(key, args, device, data, out), data)
        for r in range(args.rounds):
            for key in (group if r % 2 == 0 else group[::-1]):
                step, data = built[key]
                if step is None:
                    continue
                try:
                    m = timed(step, data, args.steps)
                except Exception as e:
                    out["errors"][key] = f"{type(e).__name__}: {e}"[:2000]
                    continue
                if key not in out["steps"] or m["img_per_s"] > out["steps"][key]["img_per_s"]:
                    out["steps"][key] = m
                print(f"round {r} {key}: {m['img_per_s']} img/s, {m['ms_per_step']} ms a step, "
                      f"SM {m.get('sm_util_mean_pct', '-')}%", flush=True)
        save(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--compile-batches", type=int, nargs="+", default=[256])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--freeze-stages", type=int, default=TrainParams().freeze_stages)
    ap.add_argument("--classes", type=int, default=1383, help="margin-head classes (the Naver final's 1,383)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN's autotuner (the pipeline leaves it off)")
    ap.add_argument("--tiny", action="store_true", help="the CPU smoke run: tiny sizes, eager variants")
    args = ap.parse_args(argv)
    if args.tiny:
        args.size, args.batches, args.compile_batches, args.steps, args.warmup = 32, [2, 4], [], 2, 1
        args.rounds, args.profile_steps, args.classes = 1, 1, 16
        args.variants = [v for v in args.variants if VARIANTS[v][0] is None]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    head = {"device": device_info(), "size": args.size, "batches": args.batches, "freeze_stages": args.freeze_stages,
            "cudnn_benchmark": args.cudnn_benchmark, "classes": args.classes,
            "lr_rule": f"linear: lr and head_lr x batch / {BASE_BATCH}", "tiny": args.tiny}
    cmd = None if argv is None else ["bench/gpu_step.py", *argv]
    result = {**head, **measure(args, device, lambda out: save_result(args.out, {**head, **out}, cmd))}
    print(f"wrote {args.out}")
    return 1 if result["errors"] and not result["steps"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
