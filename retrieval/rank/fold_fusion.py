"""Fusing the folds' ranked lists into one ranking (the ensemble stage, and the search of new images).

Each model gives, for every query, its top-K references with scores. A reference missing from
a model's list is given that list's lowest score (a bound: it scored no higher). The fused score
is the weighted sum; since each model's floor is the same for every reference of a query, the
ranking equals that of the sum of ``w * (score - floor)`` over the lists that hold it, which is
what :func:`fuse_rankings` computes, sparsely.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from retrieval.rank.topk import best_first



def fuse_rankings(scores: Sequence[np.ndarray], indices: Sequence[np.ndarray], n_refs: int,
                  k: int, weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted fusion of per-model top-K lists; returns the fused top-``k`` (scores, indices).

    ``scores[m]``/``indices[m]`` are [Q, K_m] for model m, best first, index -1 = no entry.
    Fused rows are padded with index -1 (score -inf) where fewer than ``k`` references appear
    in any list. Ties are broken by the lower reference index.
    """
    n_q = len(scores[0])
    weights = [1.0] * len(scores) if weights is None else list(weights)
    if len(weights) != len(scores):
        raise ValueError(f"{len(weights)} weights for {len(scores)} rankings")
    rows, cols, vals = [], [], []
    for w, s, i in zip(weights, scores, indices):
        if s.shape != i.shape or len(s) != n_q:
            raise ValueError("every ranking needs [Q, K] scores and indices for the same queries")
        valid = i >= 0
        floor = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
        r = np.broadcast_to(np.arange(n_q)[:, None], i.shape)
        rows.append(r[valid]); cols.append(i[valid]); vals.append((w * (s - floor))[valid])
    m = sp.csr_matrix((np.concatenate(vals).astype(np.float64),
                       (np.concatenate(rows), np.concatenate(cols))), shape=(n_q, n_refs))
    m.sum_duplicates()
    out_s = np.full((n_q, k), -np.inf, dtype=np.float32)
    out_i = np.full((n_q, k), -1, dtype=np.int64)
    for q in range(n_q):
        lo, hi = m.indptr[q], m.indptr[q + 1]
        c, v = m.indices[lo:hi], m.data[lo:hi]
        order = best_first(v, ids=c)[:k]
        out_s[q, :len(order)] = v[order]
        out_i[q, :len(order)] = c[order]
    return out_s, out_i
