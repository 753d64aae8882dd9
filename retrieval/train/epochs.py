"""The epoch loop of one backbone's run: epoch 0 = the pretrained model validated (or the run
a saved state left), then every epoch a pass over the training batches, a validation, the best
epoch's weights kept and the resume state saved; then the run's result.

Resuming (:mod:`retrieval.train.resume`): with a ``resume_dir`` the full training state is
written there (atomically, as ``last.pt``) at the end of every epoch, and a later call with the
same params, data and code picks up after the last finished epoch and ends with the same model
and history as a run that was never interrupted. Per-epoch timings (``seconds``,
``train_img_per_s``) are the only difference: rows of epochs before the resume keep the
timings of the run that did them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
from tqdm import tqdm

from retrieval.metrics import MAP, P1
from retrieval.train.job import Job
from retrieval.train.resume import load_resume_state, save_resume_state
from retrieval.train.run import Run, cpu_copy
from retrieval.metrics import VAL_MAP, VAL_P1

log = logging.getLogger(__name__)
EpochCheck = Callable[[int, dict, float], None]  # (epoch, its validation, epoch 0's mAP@1000); may raise


@dataclass
class MemberResult:
    """One backbone's finished run: the weights kept and their meta, the per-epoch history and its metrics."""
    state_dict: dict
    meta: dict
    history: pd.DataFrame
    metrics: dict


@dataclass
class Progress:
    """Where a run stands after ``epoch``: its history rows, the best record (epoch, mAP@1000,
    P@1, and ``alpha`` for a WiSE-FT mix) with its weights, the weights it started from and the
    notes for its metrics (:attr:`Job.notes`)."""
    epoch: int
    history: list[dict]
    best: dict
    best_state: dict
    start_state: dict
    notes: dict

    def keep_if_best(self, epoch: int, m: dict, weights, **extra) -> None:
        """Make ``m`` (validation figures of ``epoch``) the best if its mAP@1000 is higher;
        ``weights()`` gives its weights."""
        if m[MAP] > self.best[MAP]:
            self.best, self.best_state = {"epoch": epoch, **m, **extra}, weights()


def train_epochs(job: Job, check: EpochCheck | None = None) -> tuple[Run, Progress]:
    """The run of ``job`` to its last epoch (from its saved state if ``job.resume_dir`` holds one);
    ``check`` sees every epoch's validation before it is kept and may abandon the run by raising."""
    run = Run(job)  # seeded model and loss, the training loader, the optimiser
    path, tp = job.state_path, job.params.train
    fingerprint = job.fingerprint() if path else ""
    state = load_resume_state(path, fingerprint) if path else None
    progress = _resumed(run, state) if state is not None else _started(run)
    del state
    with tqdm(total=tp.epochs, initial=progress.epoch, desc=job.name, unit="epoch",
              disable=None if job.d.main else True) as bar:
        for epoch in range(progress.epoch + 1, tp.epochs + 1):
            m = _epoch(run, progress, epoch)
            bar.update(1)
            bar.set_postfix({"val mAP@1000": f"{m[MAP]:.4f}", "best": f"{max(progress.best[MAP], m[MAP]):.4f}"})
            if check is not None:
                check(epoch, m, progress.history[0][VAL_MAP])
            progress.keep_if_best(epoch, m, lambda: cpu_copy(run.shown.state_dict()))
            progress.epoch = epoch
            if path is not None and job.d.main:
                save_resume_state(path, fingerprint, progress, run.state())
    return run, progress


def _epoch(run: Run, progress: Progress, epoch: int) -> dict:
    """Train ``epoch``, validate it and add its history row; its validation figures."""
    start = time.perf_counter()
    loss, seen = run.train_epoch(epoch)
    train_s = time.perf_counter() - start
    m = run.validate()
    run.job.interrupts.check()
    progress.history.append(_history_row(run, epoch, m, loss, seen, train_s, time.perf_counter() - start))
    return m


def _started(run: Run) -> Progress:
    """Epoch 0: the pretrained model, validated, the reference point and the first best."""
    m0 = run.validate()
    run.job.interrupts.check()
    history = [{"epoch": 0, "image_size": run.tp.val_image_size, "train_loss": float("nan"), "lr": 0.0,
                "backbone_lr": 0.0, VAL_MAP: m0[MAP], VAL_P1: m0[P1], "seconds": 0.0,
                "train_img_per_s": float("nan")}]
    weights = cpu_copy(run.shown.state_dict())
    log.info("%s: %d classes, %d training images, %d validation images; epoch 0 val mAP@1000 %.4f",
             run.job.name, run.n_classes, len(run.ds), len(run.valid_df), m0[MAP])
    return Progress(0, history, {"epoch": 0, **m0}, weights, weights, run.job.notes)


def _resumed(run: Run, state: dict) -> Progress:
    """The run as a saved state left it (:meth:`Run.state` and the progress)."""
    run.load_state(state)
    progress = Progress(int(state["epoch"]), state["history"], state["best"], state["best_state"],
                        state["start_state"], state.get("notes", {}))
    log.info("%s: resuming from %s after epoch %d of %d (best so far: epoch %d, val mAP@1000 %.4f)",
             run.job.name, run.job.state_path, progress.epoch, run.tp.epochs, progress.best["epoch"],
             progress.best[MAP])
    return progress


def _history_row(run: Run, epoch: int, m: dict, loss_sum: float, seen: int, train_s: float, seconds: float) -> dict:
    groups = run.opt.param_groups
    row = {"epoch": epoch, "image_size": run.epoch_size(epoch), "train_loss": loss_sum / max(seen, 1),
           "lr": next(g["lr"] for g in groups if g["name"] == "neck"),
           "backbone_lr": max((g["lr"] for g in groups if g["backbone"]), default=0.0),
           VAL_MAP: m[MAP], VAL_P1: m[P1], "seconds": seconds, "train_img_per_s": seen / max(train_s, 1e-9)}
    log.info("%s epoch %d: loss %.4f, val mAP@1000 %.4f, P@1 %.4f, %.1f img/s",
             run.job.name, epoch, row["train_loss"], m[MAP], m[P1], row["train_img_per_s"])
    return row


def member_result(run: Run, progress: Progress, wise: dict) -> MemberResult:
    """The weights kept, their meta, the history and the metrics of a finished run (``wise``:
    each WiSE-FT mix's mAP@1000 and share of resamples above the best epoch)."""
    tp, best = run.tp, progress.best
    if tp.epochs and best["epoch"] == 0 and run.job.d.main:
        log.warning("%s: training did not help: no epoch beat the pretrained model's validation "
                    "mAP@1000 %.4f; the checkpoint is the untrained epoch 0", run.job.name, best[MAP])
    hist = pd.DataFrame(progress.history)
    trained = hist[hist["epoch"] > 0]
    meta = {**run.meta, "epoch": int(best["epoch"]), VAL_MAP: best[MAP], "wise_alpha": best.get("alpha")}
    metrics = {
        "best_epoch": int(best["epoch"]), VAL_MAP: float(best[MAP]), VAL_P1: float(best[P1]),
        f"epoch0_{VAL_MAP}": float(progress.history[0][VAL_MAP]), "training_helped": bool(best["epoch"] > 0),
        "wise_alpha": best.get("alpha"), f"wise_{VAL_MAP}": wise["map"],
        "wise_share_above_best_epoch": wise["share_above_best_epoch"],
        "train_images": int(len(run.ds)), "train_classes": int(run.n_classes),
        "valid_images": int(len(run.valid_df)),
        "train_img_per_s": float(trained["train_img_per_s"].mean()) if len(trained) else 0.0,
        "seconds": float(hist["seconds"].sum()), **progress.notes,
    }
    return MemberResult(progress.best_state, meta, hist, metrics)
