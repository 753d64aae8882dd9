"""Feature files that carry their ids.

A feature file is an ``.npz`` with ``ids`` (str), ``embeddings`` (float32 [N, D], rows
L2-normalised) and optionally ``labels`` and ``roles``, plus ``meta`` (a JSON string).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.io import InputError, read_npz, save_npz


@dataclass
class Features:
    ids: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray | None = None
    roles: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.ids):
            raise ValueError(f"embeddings {self.embeddings.shape} do not match {len(self.ids)} ids")
        if len(set(self.ids.tolist())) != len(self.ids):
            raise ValueError("feature ids are not unique")
        for name in ("labels", "roles"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=str)
                if len(v) != len(self.ids):
                    raise ValueError(f"{name} do not match {len(self.ids)} ids")
                setattr(self, name, v)

    def subset(self, mask: np.ndarray) -> "Features":
        pick = lambda v: None if v is None else v[mask]  # noqa: E731
        return Features(self.ids[mask], self.embeddings[mask], pick(self.labels), pick(self.roles),
                        dict(self.meta))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length, float32; an all-zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def save_features(path: str | Path, feats: Features) -> None:
    arrays = {"ids": feats.ids, "embeddings": feats.embeddings,
              "meta": np.array(json.dumps(feats.meta, sort_keys=True))}
    if feats.labels is not None:
        arrays["labels"] = feats.labels
    if feats.roles is not None:
        arrays["roles"] = feats.roles
    save_npz(path, **arrays)


def load_features(path: str | Path, expect_ids: Sequence[str] | None = None) -> Features:
    """Load a feature file; if ``expect_ids`` is given, the ids must be exactly those, in order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no feature file (run the extract stage first)")
    feats = read_npz(path, "feature file", "extract", lambda z: Features(
        z["ids"], z["embeddings"], z["labels"] if "labels" in z else None, z["roles"] if "roles" in z else None,
        json.loads(str(z["meta"])) if "meta" in z else {}))
    if expect_ids is not None and feats.ids.tolist() != list(expect_ids):
        raise InputError(f"{path}: ids do not line up with the expected {len(expect_ids)} ids "
                         f"(file has {len(feats.ids)}); re-run extract")
    return feats
