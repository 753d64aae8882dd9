"""Training one fold: margin-head metric learning with validation mAP@1000 every epoch.

:func:`train_fold` trains each backbone of ``model.backbone`` in turn, one :class:`Job` each
(:func:`~retrieval.train.selection.train_member`: the learning-rate backoff and WiSE-FT's
mixes around :func:`~retrieval.train.epochs.train_epochs`, the epoch loop of a
:class:`~retrieval.train.run.Run`), and writes the checkpoint and the history.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from retrieval.config import Params
from retrieval.io import atomic_path, claimed
from retrieval.model.checkpoints import save_members
from retrieval.train.distributed import Dist, barrier
from retrieval.train.epochs import MemberResult
from retrieval.train.interrupts import interrupt_main_process_only
from retrieval.train.job import Job
from retrieval.train.selection import train_member


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
        jobs = [Job(params.model_copy(update={"model": params.model.member(b)}), folds, root, fold,
                    _member_dir(resume_dir, b, len(backbones)), interrupts, d) for b in backbones]
        results = [train_member(job) for job in jobs]
    if not d.main:
        barrier(d)  # rank 0 writes the outputs
        return results[0].metrics
    save_members(model_path, [(r.state_dict, r.meta) for r in results])
    with atomic_path(history_path) as tmp:
        _merged_history(backbones, results).to_csv(tmp, index=False, float_format="%.6g")
    _remove_states([job.state_path for job in jobs], resume_dir)  # finished: a later run (other code, --force) must not resume them
    metrics = results[0].metrics
    if len(backbones) > 1:
        metrics = {**metrics, "seconds": float(sum(r.metrics["seconds"] for r in results)),
                   "members": {b: r.metrics for b, r in zip(backbones, results)}}
    barrier(d)
    return metrics


def _member_dir(resume_dir: str | Path | None, backbone: str, n_backbones: int) -> Path | None:
    """Where a backbone's resume state is kept: ``resume_dir``, or its ``<backbone>`` folder of several."""
    if resume_dir is None:
        return None
    return Path(resume_dir) / backbone if n_backbones > 1 else Path(resume_dir)


def _merged_history(backbones: list[str], results: list[MemberResult]) -> pd.DataFrame:
    """The first backbone's history, joined on ``epoch`` with the others' columns suffixed ``/<backbone>``."""
    history = results[0].history
    for b, r in zip(backbones[1:], results[1:]):
        history = history.merge(r.history.rename(columns={c: f"{c}/{b}" for c in r.history.columns if c != "epoch"}),
                                on="epoch", how="outer")
    return history


def _remove_states(state_paths: list[Path | None], resume_dir: str | Path | None) -> None:
    """Delete each finished member's ``last.pt``, then its folder and ``resume_dir`` if empty."""
    for state_path in state_paths:
        if state_path is not None and state_path.exists():
            state_path.unlink()
            for folder in (state_path.parent, Path(resume_dir)):
                try:
                    folder.rmdir()
                except OSError:
                    pass  # not empty, or gone
