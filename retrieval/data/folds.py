"""Cross-validation over classes, with a query/reference division inside each validation fold,
and ``folds.csv`` (:func:`write_folds`, :func:`read_folds`: one way to read it).

A class belongs to exactly one fold's validation set, so every fold model is scored on
products it never saw, as on the test set. Inside a validation fold, each class with two or
more images gives at least one query and one reference; a class with a single image becomes
a reference only (a distractor that no query is looking for).
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from retrieval.data.images import ID, IMAGE, LABEL
from retrieval.io import InputError, atomic_path

FOLD, ROLE = "fold", "role"  # the columns folds.csv adds to the training table
QUERY, REFERENCE = "query", "reference"  # the roles inside a validation fold
COLUMNS = (IMAGE, ID, LABEL, FOLD, ROLE)  # folds.csv


def assign_folds(labels: pd.Series, n_folds: int, seed: int) -> dict[str, int]:
    """Map each class to a fold, balancing image counts.

    Classes are visited largest first (ties in a seeded random order) and each goes to the
    fold with the fewest images so far (ties to the lowest fold).
    """
    counts = labels.value_counts()
    if len(counts) < n_folds:
        raise ValueError(f"{len(counts)} classes cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    classes = np.array(sorted(counts.index))
    order = rng.permutation(len(classes))
    classes = classes[order]
    classes = sorted(classes, key=lambda c: -counts[c])  # stable: keeps the random tie order
    load = np.zeros(n_folds, dtype=np.int64)
    n_cls = np.zeros(n_folds, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for c in classes:
        f = int(np.lexsort((np.arange(n_folds), n_cls, load))[0])
        fold_of[c] = f
        load[f] += counts[c]
        n_cls[f] += 1
    return fold_of


def query_count(n_images: int, query_fraction: float) -> int:
    """Queries taken from a validation class of ``n_images`` images."""
    if n_images < 2:
        return 0
    return int(min(max(round(n_images * query_fraction), 1), n_images - 1))


def make_folds(train: pd.DataFrame, n_folds: int, query_fraction: float, seed: int) -> pd.DataFrame:
    """Add ``fold`` and ``role`` ('query' or 'reference') columns to the train table.

    Rows come back sorted by (fold, label, id); within a class the queries are a seeded
    random choice of its images.
    """
    fold_of = assign_folds(train[LABEL], n_folds, seed)
    rng = np.random.default_rng(seed + 1)
    out = train.sort_values([LABEL, ID]).reset_index(drop=True).copy()
    out[FOLD] = out[LABEL].map(fold_of).astype(int)
    out[ROLE] = REFERENCE
    for _, idx in out.groupby(LABEL, sort=True).groups.items():
        idx = np.asarray(idx)
        n_q = query_count(len(idx), query_fraction)
        chosen = rng.choice(idx, size=n_q, replace=False) if n_q else []
        out.loc[chosen, ROLE] = QUERY
    return out.sort_values([FOLD, LABEL, ID]).reset_index(drop=True)


def fold_summary(folds: pd.DataFrame) -> dict:
    """Counts per fold, for the split stage's metrics."""
    summary = {}
    for f, g in folds.groupby(FOLD):
        summary[f"fold{f}"] = {
            "classes": int(g[LABEL].nunique()),
            "images": int(len(g)),
            "queries": int((g[ROLE] == QUERY).sum()),
            "references": int((g[ROLE] == REFERENCE).sum()),
        }
    return summary


def write_folds(path: str | os.PathLike, folds: pd.DataFrame) -> None:
    """Write ``folds.csv`` atomically: :data:`COLUMNS`, one row per training image."""
    with atomic_path(path) as tmp:
        folds.to_csv(tmp, index=False)


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """``folds.csv`` as written: image, id, label and role as strings, verbatim (a label ``NA``
    stays ``NA``), fold an integer."""
    return pd.read_csv(path, dtype={IMAGE: str, ID: str, LABEL: str, ROLE: str}, keep_default_na=False)


def check_fold_validates(folds: pd.DataFrame, fold: int, hint: str = "lower cv.n_folds") -> None:
    """Refuse ``fold`` if its validation part holds fewer than 2 classes: every reference is then
    relevant to every query, and its mAP@1000 is 1.0 whatever the model."""
    classes = sorted(folds.loc[folds[FOLD] == fold, LABEL].unique())
    if len(classes) < 2:
        names = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
        raise InputError(f"fold {fold} validates on {len(classes)} class ({names}): every reference is relevant "
                         f"to every query, so its mAP@1000 is 1.0 whatever the model; {hint}")


def fold_parts(folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, valid)``: the rows of the other folds (what ``fold``'s model trains on) and those
    of ``fold`` (its validation queries and references), each re-indexed from 0."""
    held_out = folds[FOLD] == fold
    return folds[~held_out].reset_index(drop=True), folds[held_out].reset_index(drop=True)
