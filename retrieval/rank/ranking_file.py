"""The ranking file that ``rerank`` writes and ``ensemble`` reads: an ``.npz`` with
``query_ids``, ``reference_ids`` (str), ``scores`` (float32 [Q, K]) and ``indices`` (int64
[Q, K], reference indices best first, -1 = no entry)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.io import InputError, read_npz, save_npz


def save_ranking(path: str | Path, query_ids, reference_ids, scores: np.ndarray, indices: np.ndarray) -> None:
    save_npz(path, query_ids=np.asarray(query_ids, dtype=str), reference_ids=np.asarray(reference_ids, dtype=str),
             scores=scores.astype(np.float32), indices=indices.astype(np.int64))


def load_ranking(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no ranking file (run the rerank stage first)")
    r = read_npz(path, "ranking file", "rerank",
                 lambda z: {k: z[k] for k in ("query_ids", "reference_ids", "scores", "indices")})
    if r["scores"].shape != r["indices"].shape or len(r["scores"]) != len(r["query_ids"]):
        raise InputError(f"{path}: scores, indices and query ids do not line up")
    return r


def load_rankings(paths: Sequence[str | Path]) -> list[dict]:
    """The ranking files of several folds, which must rank the same queries over the same references."""
    runs = [load_ranking(r) for r in paths]
    for path, r in zip(paths[1:], runs[1:]):
        if not (np.array_equal(r["query_ids"], runs[0]["query_ids"]) and
                np.array_equal(r["reference_ids"], runs[0]["reference_ids"])):
            raise InputError(f"{path}: query or reference ids differ from {paths[0]}")
    return runs
