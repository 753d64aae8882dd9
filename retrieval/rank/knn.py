"""Nearest-neighbour search by inner product (cosine on L2-normalised rows).

:func:`knn` is exact by default (:func:`exact_knn`: blocks of the dense product, each row's
top k by :func:`retrieval.rank.topk.topk`, a worker a core). :func:`build_index`
and :func:`search_index` give faiss's indexes: ``IndexFlatIP``, and the approximate ones for
galleries beyond what exact search serves, HNSW (``IndexHNSWFlat``) and IVF with product
quantisation (``IndexIVFPQ``), chosen by ``rerank.index``.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from retrieval.rank.topk import rows_best_first, topk
from retrieval.resources import usable_cores

BLOCK_BYTES = 64 << 20  # exact_knn: the score block of a batch of queries (its rows x N float32)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _sorted(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best first; equal scores by the lower index; missing results (-1) last with score -inf."""
    missing = idx < 0
    scores = np.where(missing, -np.inf, scores).astype(np.float32)
    scores, ids = rows_best_first(scores, np.where(missing, np.iinfo(np.int64).max, idx).astype(np.int64))
    return scores, np.where(ids == np.iinfo(np.int64).max, -1, ids)


def knn(queries: np.ndarray, database: np.ndarray, k: int, index=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` database rows for each query by inner product, best first.

    Returns ``(scores, indices)``, both [Q, min(k, N)]; scores float32, indices int64.
    Exact search (``index`` None or of kind ``exact``) is :func:`exact_knn`: equal scores by
    the lower database index, at the k-th place too. ``index``
    (:class:`retrieval.config.IndexParams`) may select an approximate faiss index, built on
    ``database`` for this call; its lists are ordered by the same rule, may hold fewer than k
    results (padded with index -1 and score -inf), and which of several tied items at the k-th
    place makes them is faiss' choice.
    """
    queries, database = _f32(queries), _f32(database)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"shapes do not match: queries {queries.shape}, database {database.shape}")
    k = min(k, len(database))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
    if index is None or index.kind == "exact":
        return exact_knn(queries, database, k)
    return search_index(build_index(database, index), queries, k)


def exact_knn(queries: np.ndarray, database: np.ndarray, k: int, threads: int | None = None,
              block_bytes: int = BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product: blocks of queries, each block's ``block @ database.T``
    (float32 BLAS) into a reused buffer and its rows ranked by :func:`topk` (its tie
    rule). ``threads`` workers (default: the usable cores) take every ``threads``-th block, each
    with one BLAS thread, so that one's ranking overlaps another's product. Inputs as
    :func:`knn`'s, ``0 < k <= N``; non-finite values are refused (they would make NaN scores),
    and so are products that overflow float32 into NaN."""
    queries, database = _f32(queries), _f32(database)
    if not (np.isfinite(queries).all() and np.isfinite(database).all()):
        raise ValueError("queries or database hold NaN or infinite values")
    n_q, n = len(queries), len(database)
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n} (the database's rows), got {k}")
    workers = max(1, min(threads or usable_cores(), n_q))
    rows = int(max(1, min(block_bytes // (4 * n), math.ceil(n_q / workers))))
    starts = list(range(0, n_q, rows))
    out = np.empty((n_q, k), np.float32), np.empty((n_q, k), np.int64)
    nan_free = _max_norm(queries) * _max_norm(database) < float(np.finfo(np.float32).max) / 2
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda w: _search_blocks(queries, database, starts[w::workers], rows, out, nan_free),
                      range(workers)))
    return out


def _max_norm(x: np.ndarray) -> float:
    """The largest row norm, in float64: by Cauchy-Schwarz no partial sum of a product of such
    rows exceeds the product of two of them, so below float32's range no product makes NaN."""
    return float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64).max(initial=0.0)))


def _search_blocks(queries: np.ndarray, database: np.ndarray, starts: list[int], rows: int,
                   out: tuple[np.ndarray, np.ndarray], nan_free: bool) -> None:
    """One worker's blocks of :func:`exact_knn`: the rows from each of ``starts``, their product
    into the worker's own buffer, their top k (``out``'s width) written into ``out``."""
    scores, indices = out
    buf = np.empty((rows, len(database)), np.float32)
    for a in starts:
        block = buf[: min(rows, len(queries) - a)]
        np.matmul(queries[a : a + len(block)], database.T, out=block)
        scores[a : a + len(block)], indices[a : a + len(block)] = topk(block, indices.shape[1], nan_free)


def build_index(database: np.ndarray, p=None) -> faiss.Index:
    """A faiss inner-product index holding ``database``: exact unless ``p.kind`` says otherwise.

    - ``hnsw``: ``IndexHNSWFlat`` with ``p.hnsw_m`` links, ``ef_construction``, ``ef_search``;
    - ``ivfpq``: ``IndexIVFPQ`` with ``p.nlist`` lists (0: 4 sqrt(N), at most N / 39 so that
      k-means has 39 points a centroid), ``p.pq_m`` 8-bit sub-quantisers, trained on at most
      256 vectors a list (a seeded sample), searched with ``p.nprobe`` lists.
    """
    database = _f32(database)
    n, d = database.shape
    kind = "exact" if p is None else p.kind
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p.ef_construction
        index.hnsw.efSearch = p.ef_search
    elif kind == "ivfpq":
        if d % p.pq_m:
            raise ValueError(f"rerank.index.pq_m {p.pq_m} must divide the embedding dimension {d}")
        nlist = p.nlist or int(round(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // 39))
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, p.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = p.seed
        index.pq.cp.seed = p.seed
        n_train = min(n, 256 * nlist)
        sample = np.random.default_rng(p.seed).choice(n, n_train, replace=False) if n_train < n else np.arange(n)
        index.train(database[np.sort(sample)])
        index.nprobe = min(p.nprobe, nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.add(database)
    return index


def search_index(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``index`` for each query, ordered as :func:`knn` orders them."""
    k = min(k, index.ntotal)
    queries = _f32(queries)
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
    scores, idx = index.search(queries, k)
    return _sorted(scores, idx)

