"""Exact nearest-neighbour search by inner product (cosine on L2-normalised rows) with faiss."""
from __future__ import annotations

import faiss
import numpy as np


def knn(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` database rows for each query by inner product, best first.

    Returns ``(scores, indices)``, both [Q, min(k, N)]; scores float32, indices int64.
    Equal scores inside a returned list are ordered by the lower database index (faiss does
    not promise an order among ties); which of several tied items at the k-th place makes the
    list is faiss' choice.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"shapes do not match: queries {queries.shape}, database {database.shape}")
    k = min(k, len(database))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    scores, idx = index.search(queries, k)
    order = np.lexsort((idx, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)
