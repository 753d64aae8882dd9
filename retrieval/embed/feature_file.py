"""Feature files that carry their ids.

A feature file is an ``.npz`` with ``ids`` (str), ``embeddings`` (float32 [N, D], rows
L2-normalised) and optionally ``labels`` and ``roles``, plus ``meta`` (a JSON string).

The meta says what made the file: ``format_version`` (:data:`FORMAT_VERSION`, checked when
loaded), ``model_fingerprint`` (the sha256 of the model's weights:
:func:`retrieval.model.checkpoints.model_fingerprint`), the extract settings, the fold and the
``data_listing`` digest, and ``fingerprint``: the sha256 of all of these, the same for the
query, reference and valid files of one extract run. Readers that combine files compare them
(:func:`check_same_model`, :func:`check_made_by`) and refuse a mismatch in one line.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.io import InputError, read_npz, save_npz, versioned_meta


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


FORMAT_VERSION = 2  # 2: meta carries format_version, model_fingerprint and fingerprint
_PER_FILE = ("empty_queries", "fingerprint", "format_version")  # meta entries outside the fingerprint


def features_fingerprint(meta: dict) -> str:
    """sha256 of what made a feature file: its meta less the entries of one file alone (the
    model's fingerprint, the extract settings, the fold and the data listing)."""
    made_by = {k: v for k, v in meta.items() if k not in _PER_FILE}
    return hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()


def save_features(path: str | Path, feats: Features) -> None:
    """Write ``feats``; its meta must hold the ``model_fingerprint`` of the model that made it."""
    if not feats.meta.get("model_fingerprint"):
        raise ValueError(f"{path}: a feature file's meta needs the model_fingerprint of the model that made it")
    meta = {**feats.meta, "format_version": FORMAT_VERSION, "fingerprint": features_fingerprint(feats.meta)}
    arrays = {"ids": feats.ids, "embeddings": feats.embeddings, "meta": np.array(json.dumps(meta, sort_keys=True))}
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
        _checked_meta(path, z)))
    if expect_ids is not None and feats.ids.tolist() != list(expect_ids):
        raise InputError(f"{path}: ids do not line up with the expected {len(expect_ids)} ids "
                         f"(file has {len(feats.ids)}); re-run extract")
    return feats


def load_feature_meta(path: str | Path) -> dict:
    """The meta of a feature file alone (the arrays are not read), its format checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no feature file (run the extract stage first)")
    return read_npz(path, "feature file", "extract", lambda z: _checked_meta(path, z))


def _checked_meta(path: Path, z) -> dict:
    return versioned_meta(path, z, "feature file", "extract", FORMAT_VERSION, "model_fingerprint", "model fingerprint")


def _meta(feats: Features | dict) -> dict:
    return feats.meta if isinstance(feats, Features) else feats


def _rerun(meta: dict) -> str:
    return "re-run extract" + (f" (dvc repro -s extract@{meta['fold']})" if meta.get("fold") is not None else "")


def check_same_model(feats_a: Features | dict, feats_b: Features | dict, path_a: str | Path, path_b: str | Path) -> None:
    """Refuse two feature files (or their metas) that one extract run did not make together: made
    by another model, or with other extract settings, fold or data. One line naming both files."""
    a, b = _meta(feats_a), _meta(feats_b)
    if a["fingerprint"] == b["fingerprint"]:
        return
    what = ("by another model" if a["model_fingerprint"] != b["model_fingerprint"]
            else "with other extract settings, fold or data")
    raise InputError(f"{path_b} was made {what} than {path_a} (fingerprint {b['fingerprint'][:12]} vs "
                     f"{a['fingerprint'][:12]}); {_rerun(b)}")


def check_made_by(feats: Features | dict, path: str | Path, model_fingerprint: str, model_path: str | Path) -> None:
    """Refuse a feature file that the model of ``model_fingerprint`` (read from ``model_path``) did
    not make: the model was retrained, or the features come from another fold or run."""
    meta = _meta(feats)
    if meta["model_fingerprint"] != model_fingerprint:
        raise InputError(f"{model_path} is not the model that made {path} (model fingerprint {model_fingerprint[:12]}, "
                         f"the file's {meta['model_fingerprint'][:12]}): retrained since? {_rerun(meta)}")
