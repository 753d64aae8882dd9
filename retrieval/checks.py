"""Checks of params against the data, run before any stage spends time or DVC removes an output.

The ``check`` stage runs them first (:mod:`stages.check`); ``split`` repeats the fold checks
on the images that decode. Each fault is an :class:`InputError` naming the key and the fault.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retrieval.config import Params
from retrieval.data.folds import check_fold_validates, make_folds
from retrieval.io import InputError

log = logging.getLogger(__name__)


def check_root(root: str | Path) -> None:
    """``data.root`` must be a directory."""
    path = Path(root)
    if not path.exists():
        raise InputError(f"data.root: {path}: no such directory")
    if not path.is_dir():
        raise InputError(f"data.root: {path}: not a directory")


def checked_folds(p: Params, train: pd.DataFrame) -> pd.DataFrame:
    """The split of ``train`` (:func:`retrieval.data.folds.make_folds`), refused if a fold of
    ``cv.folds`` could not train or be scored: more folds than classes, a training or a
    validation part of fewer than 2 classes, or (``train.sampler: pk``) too few classes to fill a batch."""
    n_classes = train["label"].nunique()
    if p.cv.n_folds > n_classes:
        raise InputError(f"cv.n_folds {p.cv.n_folds} exceeds the {n_classes} training classes; "
                         f"lower cv.n_folds to at most {n_classes}")
    folds = make_folds(train, p.cv.n_folds, p.split.query_fraction, p.seed)
    for f in p.cv.folds:
        trained = int(folds.loc[folds["fold"] != f, "label"].nunique())
        _check_fold_classes(p, f, trained)
    for f in p.cv.folds:  # then the scoring: a fold that cannot train says so first
        try:
            check_fold_validates(folds, f, f"lower cv.n_folds, or leave fold {f} out of cv.folds")
        except InputError as err:
            raise InputError(f"cv.n_folds {p.cv.n_folds}: {err}") from None
    return folds


def _check_fold_classes(p: Params, fold: int, trained: int) -> None:
    if trained < 2:
        raise InputError(f"cv.n_folds {p.cv.n_folds}: fold {fold} would train on {trained} class, and a "
                         f"model needs at least 2; lower cv.n_folds or add classes")
    t = p.train
    if t.sampler == "pk" and trained * t.m_per_class < t.batch_size:
        raise InputError(f"train.sampler pk: fold {fold} trains on {trained} classes x train.m_per_class "
                         f"{t.m_per_class} = {trained * t.m_per_class} images, fewer than a train.batch_size "
                         f"of {t.batch_size}; lower train.batch_size or use sampler random")


def shared_test_ids(query: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """Ids that are both a query and a reference (each such query ranks itself first), logged."""
    shared = sorted(set(query["id"]) & set(reference["id"]))
    if shared:
        log.warning("%d id(s) are both a query and a reference, e.g. %r: each such query ranks "
                    "itself first", len(shared), shared[0])
    return shared
