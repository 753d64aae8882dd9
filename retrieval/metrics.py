"""Retrieval metrics in pure numpy: AP@k, mAP@k and P@1 of rankings, and the metric names.

Conventions used throughout:

* A ranking lists reference indices best first; the value ``-1`` marks padding (no entry).
  A padding slot keeps its rank position and is never relevant, so trailing padding (what a
  k-NN search returns when the database is smaller than k) simply adds nothing.
* AP@k = (1 / min(n_relevant, k)) * sum of precision@i over the ranks i <= k that hold a
  relevant reference, where n_relevant counts the query's relevant references in the whole
  reference set (not only those retrieved).
* A query with no relevant reference at all gets AP 0.0 and still counts in the mean.
* With no queries at all, mAP and P@1 are reported as 0.0 (and ``n_queries`` as 0).
"""
from __future__ import annotations

from typing import Any

import numpy as np

PAD = -1
MAP_K = 1000  # the rank cut-off of the pipeline's mAP (the competition's mAP@1000)


def map_key(k: int) -> str:
    """The name of mAP@k in metrics dicts and tables: ``map@<k>``."""
    return f"map@{k}"


MAP, P1, N_QUERIES = map_key(MAP_K), "p@1", "n_queries"  # the pipeline's metric names
VAL_MAP, VAL_P1 = f"val_{MAP}", f"val_{P1}"  # training's validation: history columns and metrics keys


def ranking_ap(ranked: np.ndarray, query_labels: Any, ref_labels: Any, k: int) -> np.ndarray:
    """Per-query AP@k of a ranking ``[Q, K]`` of reference indices (``-1`` = padding).

    A ranked reference is relevant when its label equals the query's label; a query's
    ``n_relevant`` is the number of references with its label in the whole reference set.
    Labels may be strings or integers (one kind for queries and references alike).
    Raises ``ValueError`` for a shape mismatch, an index out of range, or a reference
    ranked twice for one query.
    """
    return per_query_metrics(ranked, query_labels, ref_labels, k)[0]


def retrieval_metrics(ranked: np.ndarray, query_labels: Any, ref_labels: Any, k: int) -> dict:
    """``{"map@<k>", "p@1", "n_queries"}`` of a ranking ``[Q, K]`` of reference indices.

    ``map@<k>`` is the mean of :func:`ranking_ap` over all queries (those with no relevant
    reference count as 0.0). ``p@1`` is the fraction of queries whose first ranked reference
    has the query's label; an empty ranking (padding first, or no columns) is a miss.
    """
    return summarise(*per_query_metrics(ranked, query_labels, ref_labels, k), k)


def summarise(ap: np.ndarray, first_hit: np.ndarray, k: int) -> dict:
    """:func:`retrieval_metrics`' figures from :func:`per_query_metrics`' ``(ap, first_hit)``."""
    n_queries = len(ap)
    if n_queries == 0:
        return {map_key(k): 0.0, P1: 0.0, N_QUERIES: 0}
    return {map_key(k): float(ap.mean()), P1: float(first_hit.mean()), N_QUERIES: int(n_queries)}


def per_query_metrics(ranked: np.ndarray, query_labels: Any, ref_labels: Any,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ap, first_hit)``: each query's AP@k (float64) and whether its first ranked reference
    has its label (bool), in query order; their means are :func:`retrieval_metrics`' figures."""
    relevant, n_relevant = _relevance(ranked, query_labels, ref_labels, k)
    first_hit = relevant[:, 0] if relevant.shape[1] else np.zeros(relevant.shape[0], dtype=bool)
    return _ap_rows(relevant, n_relevant, k), first_hit


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _check_ranked(ranked: np.ndarray, n_queries: int, n_refs: int, k: int) -> np.ndarray:
    """``ranked`` cut to its first k columns, as int64 ``[Q, min(K, k)]``, checked against the label counts."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D [queries, ranks], got shape {ranked.shape}")
    if ranked.size and ranked.dtype.kind not in "iu":
        raise ValueError(f"ranked must hold integer indices, got dtype {ranked.dtype}")
    ranked = ranked[:, :k].astype(np.int64, copy=False)
    if ranked.shape[0] != n_queries:
        raise ValueError(f"ranked has {ranked.shape[0]} rows for {n_queries} query labels")
    if ranked.size and (ranked.min() < PAD or ranked.max() >= n_refs):
        raise ValueError(f"ranked indices must lie in [-1, {n_refs - 1}] for {n_refs} references")
    _check_no_repeats(ranked)
    return ranked


def _check_no_repeats(ranked: np.ndarray) -> None:
    """Refuse a reference index that appears twice in one query's ranking (padding aside)."""
    if ranked.shape[1] < 2:
        return
    ordered = np.sort(ranked, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)
    if repeated.any():
        row, col = np.argwhere(repeated)[0]
        raise ValueError(f"query {row}: reference index {ordered[row, col + 1]} is ranked more than once")


def _relevance(ranked: np.ndarray, query_labels: Any, ref_labels: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``[Q, min(K, k)]`` relevance of the ranked references, and each query's n_relevant."""
    _check_k(k)
    ranked = _check_ranked(ranked, len(query_labels), len(ref_labels), k)
    query_codes, ref_codes = _label_codes(query_labels, ref_labels)
    n_codes = len(query_codes) + len(ref_codes)
    n_relevant = np.bincount(ref_codes, minlength=n_codes)[query_codes]
    if ref_codes.size == 0:
        return np.zeros(ranked.shape, dtype=bool), n_relevant
    present = ranked != PAD
    ranked_codes = ref_codes[np.where(present, ranked, 0)]
    return present & (ranked_codes == query_codes[:, None]), n_relevant


def _ap_rows(relevant: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k of each row of a boolean relevance matrix already cut to at most k columns."""
    precision = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
    hit_sum = (precision * relevant).sum(axis=1)
    divisor = np.minimum(n_relevant, k)
    return np.divide(hit_sum, divisor, out=np.zeros(len(divisor)), where=divisor > 0)


def _label_codes(query_labels: Any, ref_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for query and reference labels, equal codes meaning equal labels."""
    q = np.asarray(query_labels).ravel()
    r = np.asarray(ref_labels).ravel()
    _, codes = np.unique(np.concatenate([q, r]), return_inverse=True)
    codes = codes.ravel().astype(np.int64)
    return codes[: len(q)], codes[len(q):]
