"""Query expansion and database-side augmentation: pure functions on L2-normalised rows.

Both replace a vector by a weighted sum of itself and its nearest neighbours, weight
``max(similarity, 0) ** alpha`` (alpha-QE, Radenovic et al. 2018; alpha = 0 gives average QE
over the top ``k``), then re-normalise.
"""
from __future__ import annotations

import numpy as np

from retrieval.rank.knn import knn
from retrieval.rank.topk import drop_self
from retrieval.vectors import l2_normalise


def expand(vectors: np.ndarray, database: np.ndarray, scores: np.ndarray, indices: np.ndarray,
           alpha: float) -> np.ndarray:
    """normalise(v + sum_j max(s_j, 0)^alpha * database[i_j]) for each row's neighbours
    (a missing neighbour, index -1 from an approximate index, weighs nothing)."""
    w = np.maximum(scores, 0.0).astype(np.float32) ** np.float32(alpha)  # [N, k]
    w = np.where(indices < 0, np.float32(0.0), w)
    return l2_normalise(vectors.astype(np.float32) + np.einsum("nk,nkd->nd", w, database[np.maximum(indices, 0)]))


def alpha_qe(queries: np.ndarray, database: np.ndarray, k: int, alpha: float, index=None) -> np.ndarray:
    """alpha-weighted query expansion with each query's top ``k`` database neighbours
    (found with ``index``, a :class:`retrieval.config.IndexParams`; None = exact)."""
    if k <= 0:
        return queries.astype(np.float32)
    scores, idx = knn(queries, database, k, index)
    return expand(queries, database, scores, idx, alpha)


def dba(database: np.ndarray, k: int, alpha: float, index=None) -> np.ndarray:
    """Database-side augmentation: each row expanded with its top ``k`` other database rows
    (found with ``index``, as in :func:`alpha_qe`)."""
    if k <= 0:
        return database.astype(np.float32)
    scores, idx = drop_self(*knn(database, database, k + 1, index))  # with duplicates the self match may not come first
    return expand(database, database, scores, idx, alpha)
