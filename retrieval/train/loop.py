"""Training one fold: margin-head metric learning with validation mAP@1000 every epoch.

:func:`train_fold` trains each backbone of ``model.backbone`` in turn (:func:`_train_member`)
and writes the checkpoint and the history. One backbone's run reads like the README's
paragraph on training: a seeded model and loss (:class:`_Run`), epoch 0 = the pretrained model
validated, then every epoch a pass over the training batches, a validation, the best epoch's
weights kept, the resume state saved; after the last epoch the WiSE-FT mixes.

Resuming (:mod:`retrieval.train.resume`): with a ``resume_dir`` the full training state is
written there (atomically, as ``last.pt``) at the end of every epoch, and a later call with the
same params, data and code picks up after the last finished epoch and ends with the same model
and history as a run that was never interrupted. Per-epoch timings (``seconds``,
``train_img_per_s``) are the only difference: rows of epochs before the resume keep the
timings of the run that did them.
"""
from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from retrieval.config import Params
from retrieval.data.folds import IMAGE, LABEL, check_fold_validates, fold_parts
from retrieval.data.loaders import HeldImages, ImageDataset, eval_images, train_loader, train_transform
from retrieval.embed.tta import embed_dataset
from retrieval.io import InputError, atomic_path, claimed
from retrieval.metrics import MAP, P1
from retrieval.model.checkpoints import save_members
from retrieval.model.losses import metric_loss
from retrieval.model.network import autocast_dtype, build_model, fix_bn_statistics, freeze_stages, set_train_mode
from retrieval.model.small_maps import use_small_map_convs
from retrieval.validation_metrics import QUERY_AP, validation_map
from retrieval.results.bootstrap import bootstrap_means
from retrieval.train.distributed import Dist, all_sum, barrier, broadcast
from retrieval.train.interrupts import Interrupts, interrupt_main_process_only
from retrieval.train.optim import EMA, PullToStart, group_schedules, interpolate, param_groups, set_backbone_frozen
from retrieval.resources import compute_device, keep_freed_memory, set_threads
from retrieval.train.resume import (STATE_FILE, load_resume_state, rng_state, run_fingerprint, save_resume_state,
                                    set_rng_state, state_fingerprint)

log = logging.getLogger(__name__)
HELD_VALID_BYTES = 2 << 30  # validation images held decoded (uint8) for the epochs when no bigger than this
VAL_MAP, VAL_P1 = f"val_{MAP}", f"val_{P1}"  # history and metrics columns


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the augmentation pipeline for ``epoch``: a function of (seed, epoch) only, so an
    epoch's augmentations do not depend on how many epochs ran before it in this process."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0])


class LossOf(torch.nn.Module):
    """Model and loss as one module (what DistributedDataParallel wraps: the margin head's
    class centres need their gradients averaged too); ``forward(x, y)`` is :func:`forward_loss`."""

    def __init__(self, model, loss_fn, device: torch.device, dtype: torch.dtype | None, channels_last: bool):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.device, self.dtype, self.channels_last = device, dtype, channels_last

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return forward_loss(self.model, self.loss_fn, x, y, self.device, self.dtype, self.channels_last)


def forward_loss(model, loss_fn, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                 dtype: torch.dtype | None, channels_last: bool) -> torch.Tensor:
    """One batch's training loss: the model under autocast (``dtype`` None: fp32), the loss in fp32."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        emb = model(x)
    return loss_fn(emb.float(), y)


def evaluate(model, images: torch.utils.data.Dataset, valid: pd.DataFrame, batch_size: int, num_workers: int,
             amp: str, k: int = 1000) -> dict:
    """mAP@k, P@1 and each query's AP@k of the fold's validation queries against its validation
    references (``images``: :func:`validation_images` of ``valid``)."""
    emb, _ = embed_dataset(model, images, batch_size, flip_tta=False, num_workers=num_workers, amp=amp,
                           channels_last=True, desc="validate")
    return validation_map(emb, valid["role"].to_numpy(), valid["label"].to_numpy(), k, per_query=True)


def validation_images(root: str, valid: pd.DataFrame, size: int, meta: dict) -> torch.utils.data.Dataset:
    """The fold's validation images as every validation embeds them: decoded and resized once
    and held when they take at most :data:`HELD_VALID_BYTES`, else decoded at each validation."""
    images = valid[IMAGE].tolist()
    if len(images) * size * size * 3 <= HELD_VALID_BYTES:
        return HeldImages(root, images, size, meta["mean"], meta["std"])
    return eval_images(root, images, size, meta["mean"], meta["std"])


def share_above(mix: dict, best: dict) -> float:
    """Share of paired bootstrap resamples of the validation queries in which ``mix``'s mAP@1000
    is above ``best``'s (both validation records carrying :data:`QUERY_AP`)."""
    diff = np.asarray(mix[QUERY_AP], dtype=np.float64) - np.asarray(best[QUERY_AP], dtype=np.float64)
    return float((bootstrap_means(diff) > 0).mean())


def mix_wins(mix: dict, best: dict, confidence: float) -> bool:
    """WiSE-FT's rule: a mix replaces the best epoch only if its validation mAP@1000 is higher
    and, with ``confidence`` > 0, higher in at least that share of paired bootstrap resamples
    (:func:`share_above`): a gain within the noise of the fold's queries is not taken."""
    return mix[MAP] > best[MAP] and (confidence == 0 or share_above(mix, best) >= confidence)


@dataclass
class MemberResult:
    """One backbone's finished run: the weights kept and their meta, the per-epoch history,
    its metrics and its optimiser steps (all epochs, resumed ones too)."""
    state_dict: dict
    meta: dict
    history: pd.DataFrame
    metrics: dict
    steps: int


@dataclass
class Progress:
    """Where a run stands after ``epoch``: its history rows, the best record (epoch, mAP@1000,
    P@1, and ``alpha`` for a WiSE-FT mix) with its weights, and the weights it started from."""
    epoch: int
    history: list[dict]
    best: dict
    best_state: dict
    start_state: dict
    notes: dict = field(default_factory=dict)  # entries for the metrics that a resume must keep (lr_backoff)

    def keep_if_best(self, epoch: int, m: dict, weights, **extra) -> None:
        """Make ``m`` (validation figures of ``epoch``) the best if its mAP@1000 is higher;
        ``weights()`` gives its weights."""
        if m[MAP] > self.best[MAP]:
            self.best, self.best_state = {"epoch": epoch, **m, **extra}, weights()


def cpu_copy(state_dict: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


def train_fold(params: Params, folds: pd.DataFrame, root: str, fold: int, model_path: str | Path,
               history_path: str | Path, resume_dir: str | Path | None = None, d: Dist = Dist()) -> dict:
    """Train the model of ``fold`` on the other folds' classes; write the checkpoint and history.

    The checkpoint kept is the epoch with the best validation mAP@1000 (epoch 0 is the
    pretrained model before any step, the reference point); it and the history are written
    when training ends. With ``resume_dir``, the training state is saved there after every
    epoch, a matching state found there is resumed, and it is deleted once the outputs are
    written.

    With several backbones (``model.backbone`` a list) each is trained in turn, as a run of its
    own (same seed, its state under ``resume_dir/<backbone>``, so finished members are not
    trained again after a crash); the checkpoint holds them all, the history has the first
    backbone's columns as they are and every other column suffixed ``/<backbone>``, and the
    metrics are the first backbone's plus ``members`` (each backbone's) and the total seconds.

    Under torchrun (``d``, :mod:`retrieval.train.distributed`) every process trains its slice of
    each global batch and rank 0 alone validates and writes; the others return the same metrics.
    """
    backbones = params.model.backbones
    # Ctrl-C: one 'interrupted' line, no tracebacks; a second run on the same resume_dir is refused
    with interrupt_main_process_only() as interrupts, claimed(resume_dir if d.main else None):
        results, state_dirs, steps = [], [], 0
        for b in backbones:
            member = params.model_copy(update={"model": params.model.member(b)})
            sub = None if resume_dir is None else Path(resume_dir) / b if len(backbones) > 1 else Path(resume_dir)
            results.append(_train_member(member, folds, root, fold, sub, interrupts, steps, d))
            state_dirs.append(sub)
            steps += results[-1].steps
    if not d.main:
        barrier(d)  # rank 0 writes the outputs
        return results[0].metrics
    save_members(model_path, [(r.state_dict, r.meta) for r in results])
    with atomic_path(history_path) as tmp:
        _merged_history(backbones, results).to_csv(tmp, index=False, float_format="%.6g")
    _remove_states(state_dirs, resume_dir)  # finished: a later run (other code, --force) must not resume them
    metrics = results[0].metrics
    if len(backbones) > 1:
        metrics = {**metrics, "seconds": float(sum(r.metrics["seconds"] for r in results)),
                   "members": {b: r.metrics for b, r in zip(backbones, results)}}
    barrier(d)
    return metrics


def _merged_history(backbones: list[str], results: list[MemberResult]) -> pd.DataFrame:
    """The first backbone's history, joined on ``epoch`` with the others' columns suffixed ``/<backbone>``."""
    history = results[0].history
    for b, r in zip(backbones[1:], results[1:]):
        history = history.merge(r.history.rename(columns={c: f"{c}/{b}" for c in r.history.columns if c != "epoch"}),
                                on="epoch", how="outer")
    return history


def _remove_states(state_dirs: list[Path | None], resume_dir: str | Path | None) -> None:
    """Delete each finished member's ``last.pt``, then its folder and ``resume_dir`` if empty."""
    for sub in state_dirs:
        state_path = None if sub is None else sub / STATE_FILE
        if state_path is not None and state_path.exists():
            state_path.unlink()
            for folder in (state_path.parent, Path(resume_dir)):
                try:
                    folder.rmdir()
                except OSError:
                    pass  # not empty, or gone


def _train_member(params: Params, folds: pd.DataFrame, root: str, fold: int, resume_dir: Path | None,
                  interrupts: Interrupts, steps_before: int = 0, d: Dist = Dist()) -> MemberResult:
    """One backbone's run; writes only the resume state. ``steps_before`` (the steps of the
    backbones trained before it) only offsets the test hook's step count.

    With ``train.lr_backoff``, a run whose first backbone epoch validates below epoch 0 is
    abandoned and trained again from the start at ``lr x lr_backoff`` (:func:`backed_off`); a
    killed run that had backed off resumes the lower rate's run."""
    lower = backed_off(params)
    if lower is not None and _has_state(lower, folds, root, fold, resume_dir):
        return _attempt(lower, folds, root, fold, resume_dir, interrupts, steps_before, d, None)
    result = _attempt(params, folds, root, fold, resume_dir, interrupts, steps_before, d, lower)
    if isinstance(result, MemberResult):
        return result
    note = {"abandoned_epoch": result["epoch"], f"abandoned_{VAL_MAP}": result["val"], "lr": lower.train.lr,
            "freeze_bn": lower.train.freeze_bn}
    log.warning("fold %d %s: epoch %d validated at mAP@1000 %.4f, below the pretrained model's %.4f: the learning "
                "rate is too high for these images; training again from the start at lr %g%s (train.lr_backoff)",
                fold, params.model.backbone, result["epoch"], result["val"], result["epoch0"], lower.train.lr,
                ", BatchNorm statistics fixed" if lower.train.freeze_bn else "")
    return _attempt(lower, folds, root, fold, resume_dir, interrupts, steps_before, d, None, {"lr_backoff": note})


def backed_off(params: Params) -> Params | None:
    """``params`` with ``train.lr`` x ``train.lr_backoff`` (and ``freeze_bn`` if
    ``train.backoff_freeze_bn``) and the backoff spent; None when off or when no epoch would
    train the backbone."""
    tp = params.train
    if not tp.lr_backoff or tp.epochs <= tp.head_warmup_epochs:
        return None
    lower = {"lr": tp.lr * tp.lr_backoff, "lr_backoff": 0.0, "freeze_bn": tp.freeze_bn or tp.backoff_freeze_bn}
    return params.model_copy(update={"train": tp.model_copy(update=lower)})


def _has_state(params: Params, folds: pd.DataFrame, root: str, fold: int, resume_dir: Path | None) -> bool:
    """Whether ``resume_dir`` holds a state of the run ``params`` describe (checked quietly)."""
    path = Path(resume_dir) / STATE_FILE if resume_dir is not None else None
    if path is None or not path.is_file():
        return False
    train_df, valid_df = fold_parts(folds, fold)
    return state_fingerprint(path) == run_fingerprint(params, fold, root, train_df, valid_df)


def _attempt(params: Params, folds: pd.DataFrame, root: str, fold: int, resume_dir: Path | None,
             interrupts: Interrupts, steps_before: int, d: Dist, lower: Params | None,
             notes: dict | None = None) -> MemberResult | dict:
    """The run of :func:`_train_member`; with ``lower`` (a backoff to come), the abandoned
    epoch's record (``epoch``, ``val``, ``epoch0``) instead of a result when it validates below
    epoch 0. ``notes`` go into the metrics (and the resume state, for a resumed run's metrics)."""
    tp = params.train
    run = _Run(params, folds, root, fold, d)  # seeded model and loss, the training loader, the optimiser
    state_path = Path(resume_dir) / STATE_FILE if resume_dir is not None else None
    fingerprint = run_fingerprint(params, fold, root, run.train_df, run.valid_df) if state_path else ""
    state = load_resume_state(state_path, fingerprint) if state_path else None
    progress = run.resume(state, state_path) if state is not None else run.start(interrupts, notes or {})
    del state
    step = progress.epoch * run.steps_per_epoch
    bar = tqdm(total=tp.epochs, initial=progress.epoch, desc=f"fold {fold} {params.model.backbone}", unit="epoch",
               disable=None if d.main else True)
    for epoch in range(progress.epoch + 1, tp.epochs + 1):
        start = time.perf_counter()
        loss, seen, step = run.train_epoch(epoch, step, lambda s: interrupts.check(s + steps_before))
        train_s = time.perf_counter() - start
        m = run.validate()
        interrupts.check()
        row = run.history_row(epoch, m, loss, seen, train_s, time.perf_counter() - start)
        progress.history.append(row)
        bar.update(1)
        bar.set_postfix({"val mAP@1000": f"{m[MAP]:.4f}", "best": f"{max(progress.best[MAP], m[MAP]):.4f}"})
        epoch0 = progress.history[0][VAL_MAP]
        if lower is not None and epoch == tp.head_warmup_epochs + 1 and m[MAP] < epoch0:
            bar.close()
            return {"epoch": epoch, "val": float(m[MAP]), "epoch0": float(epoch0)}
        progress.keep_if_best(epoch, m, lambda: cpu_copy(run.shown.state_dict()))
        progress.epoch = epoch
        if state_path is not None and d.main:
            save_resume_state(state_path, fingerprint, progress, run.state())
    bar.close()
    wise = run.wise(progress) if tp.wise_alphas and tp.epochs else {"map": {}, "share_above_best_epoch": {}}
    return run.result(progress, wise, run.steps_per_epoch * tp.epochs)


class _Run:
    """One backbone's training run on one fold: the seeded model and loss, the training loader
    and the optimiser, built in this order (the order fixes the random draws)."""

    def __init__(self, params: Params, folds: pd.DataFrame, root: str, fold: int, d: Dist):
        tp, mp = params.train, params.model
        self.tp, self.backbone, self.fold, self.root, self.d = tp, mp.backbone, fold, root, d
        self.seed = params.seed + fold
        seed_everything(self.seed)
        set_threads(tp.threads, d.on_node)
        keep_freed_memory()  # big activations reused between steps, not page-faulted afresh
        self.device = compute_device(d.local_rank)
        self.train_df, self.valid_df = fold_parts(folds, fold)
        self.valid_images = None  # decoded at the first validation (rank 0 alone validates)
        classes = sorted(self.train_df[LABEL].unique())
        if len(classes) < 2:
            raise InputError(f"fold {fold}: trains on {len(classes)} class; a model needs at least 2 (lower cv.n_folds)")
        check_fold_validates(folds, fold)  # as the check stage does, for a run of train alone
        self.n_classes = len(classes)
        targets = self.train_df[LABEL].map({c: i for i, c in enumerate(classes)}).to_numpy()
        self._build_model(params)
        self.ds = ImageDataset(root, self.train_df[IMAGE], targets, None)  # its transform is set for each epoch
        self.loader, self.sampler = train_loader(self.ds, targets, tp, self.seed, self.device, d)
        self.steps_per_epoch = len(self.loader)
        self._build_optimiser()

    def _build_model(self, params: Params) -> None:
        tp, mp, d = params.train, params.model, self.d
        model, meta = build_model(mp)
        use_small_map_convs(model)  # the backward on maps of a few pixels without oneDNN (small_maps.py)
        meta.update(fold=self.fold, classes=self.n_classes,
                    image_size=tp.final_image_size if tp.final_epochs else tp.image_size)
        if d.world > 1 and self.device.type == "cuda" and not tp.freeze_bn:
            # statistics of the global batch; timm's conversion keeps its BatchNormAct layers' activations.
            # Before freezing, so that the frozen list holds the converted modules.
            from timm.layers import convert_sync_batchnorm
            model = convert_sync_batchnorm(model)
        elif d.world > 1 and not tp.freeze_bn and d.main:
            log.warning("fold %d: %d CPU processes: BatchNorm statistics are each process's own slice of the "
                        "batch (no SyncBatchNorm on the CPU); train.freeze_bn makes them batch-independent",
                        self.fold, d.world)
        self.frozen = freeze_stages(model, tp.freeze_stages)
        model.to(self.device)
        if tp.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model, self.meta = model, meta
        self.loss_fn = metric_loss(mp, tp, self.n_classes).to(self.device)

    def _build_optimiser(self) -> None:
        tp, device = self.tp, self.device
        total = self.steps_per_epoch * tp.epochs
        warmup = int(round(tp.warmup_epochs * self.steps_per_epoch))
        groups = param_groups(self.model, self.loss_fn, tp)
        self.backbone_trainable = [prm for g in groups if g["backbone"] for prm in g["params"]]
        self.opt = torch.optim.AdamW(groups, weight_decay=tp.weight_decay,
                                     fused=device.type in ("cpu", "cuda"))  # one kernel, not one per tensor
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, group_schedules(groups, total, warmup, tp.head_warmup_epochs * self.steps_per_epoch))
        self.pull = PullToStart(self.opt, tp.l2sp_decay) if tp.l2sp_decay > 0 else None  # built on the pretrained weights
        self.ema = EMA(self.model, tp.ema_decay) if tp.ema_decay > 0 else None
        self.shown = copy.deepcopy(self.model) if self.ema is not None else self.model  # the weights validated and kept
        self.dtype = autocast_dtype(tp.amp, device, training=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)  # fp16 (older GPUs) only
        self.step_loss = LossOf(self.model, self.loss_fn, device, self.dtype, tp.channels_last)
        if self.d.enabled:  # gradients averaged over the processes during backward
            self.step_loss = torch.nn.parallel.DistributedDataParallel(
                self.step_loss, device_ids=[self.d.local_rank] if device.type == "cuda" else None,
                find_unused_parameters=tp.head_warmup_epochs > 0)  # the frozen backbone has no gradients

    def validate(self, weights: dict | None = None) -> dict:
        """Validation mAP@1000 and P@1 of ``weights`` (default: the current or EMA weights);
        rank 0 validates, the others take its figures."""
        if weights is not None or self.ema is not None:
            self.shown.load_state_dict(weights if weights is not None else self.ema.state)
        tp = self.tp
        if self.d.main and self.valid_images is None:
            self.valid_images = validation_images(self.root, self.valid_df, tp.val_image_size, self.meta)
        m = evaluate(self.shown, self.valid_images, self.valid_df, tp.batch_size * 2, tp.num_workers,
                     tp.amp) if self.d.main else None
        return broadcast(m, self.d)

    def start(self, interrupts: Interrupts, notes: dict) -> Progress:
        """Epoch 0: the pretrained model, validated, the reference point and the first best."""
        m0 = self.validate()
        interrupts.check()
        history = [{"epoch": 0, "image_size": self.tp.val_image_size, "train_loss": float("nan"), "lr": 0.0,
                    "backbone_lr": 0.0, VAL_MAP: m0[MAP], VAL_P1: m0[P1], "seconds": 0.0,
                    "train_img_per_s": float("nan")}]
        weights = cpu_copy(self.shown.state_dict())
        log.info("fold %d %s: %d classes, %d training images, %d validation images; epoch 0 val mAP@1000 %.4f",
                 self.fold, self.backbone, self.n_classes, len(self.ds), len(self.valid_df), m0[MAP])
        return Progress(0, history, {"epoch": 0, **m0}, weights, weights, notes)

    def resume(self, state: dict, path: Path) -> Progress:
        """The run as a saved state left it (:meth:`state`)."""
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss_fn"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.state = {k: v.to(self.device) for k, v in state["ema"].items()}
            self.ema.updates = state["ema_updates"]
        set_rng_state(state["rng"], self.loader.generator)
        progress = Progress(int(state["epoch"]), state["history"], state["best"], state["best_state"],
                            state["start_state"], state.get("notes", {}))
        log.info("fold %d %s: resuming from %s after epoch %d of %d (best so far: epoch %d, val mAP@1000 %.4f)",
                 self.fold, self.backbone, path, progress.epoch, self.tp.epochs, progress.best["epoch"],
                 progress.best[MAP])
        return progress

    def state(self) -> dict:
        """What a resume needs besides the progress: every module's and the optimiser's state."""
        return {"model": self.model.state_dict(), "loss_fn": self.loss_fn.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "ema": None if self.ema is None else cpu_copy(self.ema.state),
                "ema_updates": 0 if self.ema is None else self.ema.updates, "rng": rng_state(self.loader.generator)}

    def epoch_size(self, epoch: int) -> int:
        """Training image size of ``epoch`` (1-based): progressive resizing ends at final_image_size."""
        tp = self.tp
        return tp.final_image_size if epoch > tp.epochs - tp.final_epochs else tp.image_size

    def _prepare_epoch(self, epoch: int) -> None:
        """Head warm-up or not, frozen modules in eval mode, this epoch's augmentation seed and size."""
        tp, model = self.tp, self.model
        head_only = epoch <= tp.head_warmup_epochs
        set_backbone_frozen(model, self.backbone_trainable, head_only)
        set_train_mode(model, [model.backbone] if head_only else self.frozen)
        if tp.freeze_bn:
            fix_bn_statistics(model)
        # in-process augmentations (num_workers 0) start each epoch from a seed of their own;
        # workers are seeded by seed_worker from the loader's generator (saved and restored)
        seed = epoch_seed(self.seed, epoch)
        self.ds.transform = train_transform(self.epoch_size(epoch), self.meta["mean"], self.meta["std"], seed)
        if self.d.enabled:  # augmentation independent of the rank and worker that loads an image
            self.ds.sample_seed = seed
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def train_epoch(self, epoch: int, step: int, after_step) -> tuple[float, int, int]:
        """One pass over the training batches: (loss summed over images, images, the step count
        after it), summed over every process's slice; ``after_step(step)`` runs after each step."""
        self._prepare_epoch(epoch)
        seen, loss_sum = 0, 0.0
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{self.tp.epochs}", unit="batch",
                   disable=None if self.d.main else True, leave=False)
        for x, y in bar:
            loss = self._step(x, y, epoch, step)
            step += 1
            seen += len(x)
            loss_sum += loss * len(x)
            bar.set_postfix(loss=f"{loss:.3f}")
            after_step(step)
        loss_sum, seen = all_sum([loss_sum, seen], self.d)
        return loss_sum, seen, step

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> float:
        """One optimiser step on a batch; its loss."""
        loss = self.step_loss(x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fold {self.fold} epoch {epoch} step {step}: loss is {loss.item()}")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.pull is not None:
            self.pull()  # at this step's rates
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.item()

    def history_row(self, epoch: int, m: dict, loss_sum: float, seen: int, train_s: float, seconds: float) -> dict:
        groups = self.opt.param_groups
        row = {"epoch": epoch, "image_size": self.epoch_size(epoch), "train_loss": loss_sum / max(seen, 1),
               "lr": next(g["lr"] for g in groups if g["name"] == "neck"),
               "backbone_lr": max((g["lr"] for g in groups if g["backbone"]), default=0.0),
               VAL_MAP: m[MAP], VAL_P1: m[P1], "seconds": seconds, "train_img_per_s": seen / max(train_s, 1e-9)}
        log.info("fold %d %s epoch %d: loss %.4f, val mAP@1000 %.4f, P@1 %.4f, %.1f img/s",
                 self.fold, self.backbone, epoch, row["train_loss"], m[MAP], m[P1], row["train_img_per_s"])
        return row

    def wise(self, progress: Progress) -> dict:
        """WiSE-FT: validate each mix of the start and the last epoch's weights; the best mix that
        :func:`mix_wins` over the best epoch replaces it (its record carries ``alpha``). Returns
        every mix's mAP@1000 and its share of resamples above the best epoch."""
        last = cpu_copy(self.ema.state if self.ema is not None else self.model.state_dict())  # also after a resume at the end
        best_epoch, scores, shares = progress.best, {}, {}
        for alpha in self.tp.wise_alphas:
            mixed = interpolate(progress.start_state, last, alpha)
            m = self.validate(mixed)
            scores[str(alpha)] = m[MAP]
            shares[str(alpha)] = share_above(m, best_epoch) if QUERY_AP in m and QUERY_AP in best_epoch else None
            log.info("WiSE-FT alpha %.2f: val mAP@1000 %.4f, P@1 %.4f; above the best epoch's %.4f in %s of "
                     "paired resamples", alpha, m[MAP], m[P1], best_epoch[MAP], shares[str(alpha)])
            if mix_wins(m, best_epoch, self.tp.wise_confidence):
                progress.keep_if_best(self.tp.epochs, m, lambda: mixed, alpha=alpha)
        return {"map": scores, "share_above_best_epoch": shares}

    def result(self, progress: Progress, wise: dict, steps: int) -> MemberResult:
        tp, best = self.tp, progress.best
        if tp.epochs and best["epoch"] == 0 and self.d.main:
            log.warning("fold %d %s: training did not help: no epoch beat the pretrained model's validation "
                        "mAP@1000 %.4f; the checkpoint is the untrained epoch 0", self.fold, self.backbone, best[MAP])
        hist = pd.DataFrame(progress.history)
        trained = hist[hist["epoch"] > 0]
        meta = {**self.meta, "epoch": int(best["epoch"]), VAL_MAP: best[MAP], "wise_alpha": best.get("alpha")}
        metrics = {
            "best_epoch": int(best["epoch"]), VAL_MAP: float(best[MAP]), VAL_P1: float(best[P1]),
            f"epoch0_{VAL_MAP}": float(progress.history[0][VAL_MAP]), "training_helped": bool(best["epoch"] > 0),
            "wise_alpha": best.get("alpha"), f"wise_{VAL_MAP}": wise["map"],
            "wise_share_above_best_epoch": wise["share_above_best_epoch"],
            "train_images": int(len(self.ds)), "train_classes": int(self.n_classes),
            "valid_images": int(len(self.valid_df)),
            "train_img_per_s": float(trained["train_img_per_s"].mean()) if len(trained) else 0.0,
            "seconds": float(hist["seconds"].sum()), **progress.notes,
        }
        return MemberResult(progress.best_state, meta, hist, metrics, steps)
