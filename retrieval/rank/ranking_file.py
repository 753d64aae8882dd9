"""The ranking file that ``rerank`` writes and ``ensemble`` and ``report`` read: an ``.npz`` with
``query_ids``, ``reference_ids`` (str), ``scores`` (float32 [Q, K]), ``indices`` (int64
[Q, K], reference indices best first, -1 = no entry) and ``meta`` (a JSON string:
``format_version``, :data:`FORMAT_VERSION`, checked when loaded; ``features``, the fingerprint
of the feature files ranked; ``data_listing``, the digest of the data they were made from)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.io import InputError, read_npz, save_npz, versioned_meta

FORMAT_VERSION = 2  # 2: meta with the features' fingerprint
_ARRAYS = ("query_ids", "reference_ids", "scores", "indices")


def ranking_meta(features_meta: dict) -> dict:
    """A ranking's meta, from the meta of the feature files it ranks."""
    return {"features": features_meta["fingerprint"], "data_listing": features_meta.get("data_listing")}


def save_ranking(path: str | Path, query_ids, reference_ids, scores: np.ndarray, indices: np.ndarray,
                 meta: dict) -> None:
    """Write a ranking; ``meta`` (:func:`ranking_meta`) must name the ``features`` it ranks."""
    if not meta.get("features"):
        raise ValueError(f"{path}: a ranking's meta needs the fingerprint of the features it ranks")
    save_npz(path, query_ids=np.asarray(query_ids, dtype=str), reference_ids=np.asarray(reference_ids, dtype=str),
             scores=scores.astype(np.float32), indices=indices.astype(np.int64),
             meta=np.array(json.dumps({**meta, "format_version": FORMAT_VERSION}, sort_keys=True)))


def _read(path: Path, z) -> dict:
    meta = versioned_meta(path, z, "ranking file", "rerank", FORMAT_VERSION, "features", "features fingerprint")
    return {**{k: z[k] for k in _ARRAYS}, "meta": meta}


def load_ranking(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no ranking file (run the rerank stage first)")
    r = read_npz(path, "ranking file", "rerank", lambda z: _read(path, z))
    if r["scores"].shape != r["indices"].shape or len(r["scores"]) != len(r["query_ids"]):
        raise InputError(f"{path}: scores, indices and query ids do not line up")
    return r


def load_rankings(paths: Sequence[str | Path]) -> list[dict]:
    """The ranking files of several folds, which must rank the same queries over the same
    references, from features made from the same data."""
    runs = [load_ranking(r) for r in paths]
    for path, r in zip(paths[1:], runs[1:]):
        if not (np.array_equal(r["query_ids"], runs[0]["query_ids"]) and
                np.array_equal(r["reference_ids"], runs[0]["reference_ids"])):
            raise InputError(f"{path}: query or reference ids differ from {paths[0]}")
        data, first = r["meta"].get("data_listing"), runs[0]["meta"].get("data_listing")
        if data != first:
            raise InputError(f"{path} ranks features made from other data than {paths[0]} (data listing "
                             f"{str(data)[:12]} vs {str(first)[:12]}); re-run extract and rerank of the older fold")
    return runs
