"""Top-k with one tie rule, owned here: higher scores first, equal scores by the lower index.

:func:`topk_indices` picks and orders each row's top k of a dense score matrix (ties at the
k-th place too); :func:`best_first` orders given (score, index) entries by the same rule, for
lists that come from elsewhere (a faiss index, a sparse fusion, re-ranking candidates);
:func:`topk_indices_by` is the two-key version (a primary score, ties by a second score, then
by index); :func:`drop_self` removes each row's own entry from a kNN list of a set against
itself.
"""
from __future__ import annotations

import math

import numba
import numpy as np



def topk_indices(scores: np.ndarray, k: int, nan_free: bool = False) -> np.ndarray:
    """Column indices of the ``min(k, N)`` highest scores of each row, best first.

    ``scores`` is ``[Q, N]`` (or a 1-D ``[N]`` vector, giving a 1-D result). Ties are broken
    by the lower column index, including ties at the k-th place, so the result is
    deterministic. ``k`` must be >= 0; NaN scores are refused with ``ValueError``, unless the
    caller guarantees there are none (``nan_free``: the check is skipped; with a NaN the result
    is undefined).
    """
    scores = np.asarray(scores)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D or 2-D, got shape {scores.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if scores.ndim == 1:
        return topk_indices(scores[None, :], k, nan_free)[0]
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if _takes_float32_path(scores, k):
        return _topk_float32(scores, k, nan_free)  # refuses NaN in its one pass
    if not nan_free and scores.dtype.kind in "fc" and np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if k == 0:
        return np.empty((n_rows, 0), dtype=np.int64)
    return _topk_by_partition(scores, k)


def _topk_by_partition(scores: np.ndarray, k: int) -> np.ndarray:
    """:func:`topk_indices` of any dtype (``0 < k <= N``): each row's top-k set, then its order."""
    chosen = _topk_columns_ascending(scores, k)
    order = _argsort_descending_stable(np.take_along_axis(scores, chosen, axis=1))
    return np.take_along_axis(chosen, order, axis=1)


def _topk_columns_ascending(scores: np.ndarray, k: int) -> np.ndarray:
    """The column indices of each row's top-k set in ascending index order, ``[Q, k]``.

    The set holds every score above the row's k-th largest value plus, among the scores equal
    to it, the ones with the lowest column indices; this settles ties at the k-th place.
    """
    n_cols = scores.shape[1]
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k, None]
    above = scores > kth
    at = scores == kth
    room = k - above.sum(axis=1, keepdims=True)
    take = above | (at & (np.cumsum(at, axis=1) <= room))
    return np.nonzero(take)[1].reshape(scores.shape[0], k)


_LOW32 = np.uint64(0xFFFFFFFF)


def topk(scores: np.ndarray, k: int, nan_free: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk_indices` of a 2-D ``scores`` and the scores themselves, ``([Q, k], [Q, k])``:
    the values ``scores`` holds at those columns (a -0.0 may come back as +0.0, equal to it)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    if _takes_float32_path(scores, k):
        return _topk_float32(scores, min(k, scores.shape[1]), nan_free, values=True)
    idx = topk_indices(scores, k, nan_free)
    return np.take_along_axis(scores, idx, 1), idx


def _takes_float32_path(scores: np.ndarray, k: int) -> bool:
    """Whether :func:`_topk_float32` ranks a 2-D ``scores``: float32, not empty, ``k > 0``, and
    columns that fit the lower 32 bits of its keys."""
    return scores.dtype == np.float32 and scores.size > 0 and k > 0 and scores.shape[1] < 2**31


def _topk_float32(scores: np.ndarray, k: int, nan_free: bool, values: bool = False):
    """:func:`topk_indices` of float32 scores (``0 < k <= N``): each row's scores at or above
    a threshold no higher than its k-th largest (:func:`_sample_threshold`), packed with their
    columns into keys by one compiled pass (:func:`_candidate_keys`) and sorted; the last k
    keys, read backwards, are the row's top k by the tie rule. NaN is refused here, by that
    pass, unless the caller vouches for ``nan_free``. With ``values``, the scores too, read
    back from the keys (no second gather from the score matrix)."""
    scores = np.ascontiguousarray(scores)
    n_rows, n_cols = scores.shape
    width = min(n_cols, 2 * k + 64)
    keys, counts, n_nan = _candidate_keys(scores, _sample_threshold(scores, k), width, not nan_free)
    if n_nan:
        raise ValueError("scores contain NaN")
    redo = np.flatnonzero((counts < k) | (counts > width))  # the sample guessed too high or too low
    if len(redo):
        exact = np.partition(scores[redo], n_cols - k, axis=1)[:, n_cols - k]
        keys[redo], counts[redo], _ = _candidate_keys(scores[redo], exact, width, False)
    crowded = np.flatnonzero(counts > width)  # more scores tied at the k-th value than the width
    top = keys[:, : max(k, min(width, int(counts.max())))]  # zeros past a row's count sort first
    top.sort(axis=1)
    top = top[:, : -k - 1 : -1]
    out = (_LOW32 - (top & _LOW32)).astype(np.int64)
    if len(crowded):
        out[crowded] = _topk_by_partition(scores[crowded], k)
    if not values:
        return out
    vals = _key_values(top)
    if len(crowded):
        vals[crowded] = np.take_along_axis(scores[crowded], out[crowded], 1)
    return vals, out


@numba.njit(nogil=True, cache=True)
def _candidate_keys(scores, threshold, width, count_nan):  # pragma: no cover - compiled; tested through topk_indices
    """Each row's packed keys (:func:`_packed_key`) of its scores at or above its threshold, in
    column order, in a ``[rows, width]`` array padded with zeros; each row's count of such scores
    (keys past ``width`` are not written); with ``count_nan``, the count of NaN scores (else 0).
    One branch-free pass a row."""
    n_rows, n_cols = scores.shape
    keys = np.empty((n_rows, width), np.uint64)
    counts = np.empty(n_rows, np.int64)
    cols = np.empty(n_cols + 1, np.int32)
    n_nan = 0
    for r in range(n_rows):
        t, c = threshold[r], 0
        if count_nan:
            for j in range(n_cols):
                cols[c] = j
                c += scores[r, j] >= t
                n_nan += scores[r, j] != scores[r, j]
        else:
            for j in range(n_cols):
                cols[c] = j
                c += scores[r, j] >= t
        counts[r] = c
        m = min(c, width)
        for i in range(m):
            keys[r, i] = _packed_key(scores[r, cols[i]], cols[i])
        keys[r, m:] = 0
    return keys, counts, n_nan


@numba.njit(inline="always")
def _packed_key(value, col):  # pragma: no cover - compiled
    """A uint64 key whose ascending order is (value ascending, column descending): the float32
    bits made order-preserving (-0.0 read as +0.0, equal to it) over the complement of the column."""
    bits = np.float32(value + np.float32(0.0)).view(np.int32)
    ordered = np.uint32(bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))) ^ np.uint32(0x80000000)
    return (np.uint64(ordered) << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - np.uint64(col))


def _key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 scores packed in keys (:func:`_packed_key`'s upper half, made IEEE bits again)."""
    ordered = (keys >> np.uint64(32)).astype(np.uint32)
    negative = ordered < np.uint32(0x80000000)
    return np.where(negative, ~ordered, ordered ^ np.uint32(0x80000000)).view(np.float32)


def _sample_threshold(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, a value that about ``k + 3 sqrt(k)`` of its scores reach: the matching rank of
    every ``k // 40``-th column (about 40 n / k columns), so that the exact k-th value is rarely
    above it. Never wrong, only slow when it is: :func:`_topk_float32` checks the count."""
    n_cols = scores.shape[1]
    sample = scores[:, :: max(1, k // 40)]
    m = sample.shape[1]
    expected = k * m / n_cols
    rank = min(m, math.ceil(expected + 3 * math.sqrt(expected)) + 1)
    return np.partition(sample, m - rank, axis=1)[:, m - rank]


def _argsort_descending_stable(values: np.ndarray) -> np.ndarray:
    """Row-wise argsort, highest first, equal values kept in their original column order.

    Sorting the column-reversed rows ascending with a stable sort and reversing the result
    gives that order without negating the values (safe for unsigned and boolean dtypes).
    """
    n_cols = values.shape[1]
    order = np.argsort(values[:, ::-1], axis=1, kind="stable")[:, ::-1]
    return n_cols - 1 - order


def best_first(*scores: np.ndarray, ids: np.ndarray, groups: np.ndarray | None = None, axis: int = -1) -> np.ndarray:
    """The order (argsort along ``axis``) that puts entries best first by the tie rule: the first
    of ``scores`` descending, equal values by the next one, then by ``ids`` ascending; with
    ``groups`` (1-D), grouped by it ascending first. For lists found elsewhere: ids are column
    or reference indices (padding mapped past every real one by the caller)."""
    keys = (ids, *[-s for s in reversed(scores)]) + ((groups,) if groups is not None else ())
    return np.lexsort(keys, axis=axis)


def rows_best_first(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``[Q, k]`` (score, id) lists put best first by the tie rule (:func:`best_first`):
    the same result, but rows already in that order, as a search library's sorted lists nearly
    always are, are checked in one pass and left as they are; only the others are sorted."""
    a, b = scores[:, :-1], scores[:, 1:]
    in_order = ((a > b) | ((a == b) & (ids[:, :-1] <= ids[:, 1:]))).all(axis=1)
    if in_order.all():
        return scores, ids
    rows = np.flatnonzero(~in_order)
    order = best_first(scores[rows], ids=ids[rows], axis=1)
    scores, ids = scores.copy(), ids.copy()
    scores[rows] = np.take_along_axis(scores[rows], order, 1)
    ids[rows] = np.take_along_axis(ids[rows], order, 1)
    return scores, ids


def topk_indices_by(primary: np.ndarray, secondary: np.ndarray, k: int) -> np.ndarray:
    """Column indices [B, k] of each row's best ``k`` by ``(primary desc, secondary desc, index
    asc)``, best first: :func:`topk_indices`' rule with a second score before the index."""
    n_rows, n_cols = primary.shape
    if k >= n_cols:
        chosen = np.broadcast_to(np.arange(n_cols), primary.shape).copy()
    else:
        chosen = np.argpartition(-primary, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(primary, chosen, 1).min(axis=1)
        n_above = (primary > kth[:, None]).sum(axis=1)
        bad = np.flatnonzero((primary >= kth[:, None]).sum(axis=1) > k)  # a tie group straddles the k-th place
        if len(bad):
            chosen[bad] = _settle_ties(primary[bad], secondary[bad], kth[bad, None], n_above[bad], k)
    order = best_first(np.take_along_axis(primary, chosen, 1), np.take_along_axis(secondary, chosen, 1),
                       ids=chosen, axis=1)
    return np.take_along_axis(chosen, order, 1)


def _settle_ties(primary: np.ndarray, secondary: np.ndarray, kth: np.ndarray, n_above: np.ndarray,
                 k: int) -> np.ndarray:
    """Rows whose tie at the k-th place straddles it: every column above ``kth``, then the tied
    columns by (secondary desc, index asc) until k."""
    need = k - n_above
    tied = topk_indices(np.where(primary == kth, secondary, -np.inf), int(need.max()))
    fixed = np.empty((len(primary), k), np.int64)
    r_a, c_a = np.nonzero(primary > kth)
    fixed[r_a, np.arange(len(r_a)) - np.repeat(np.cumsum(n_above) - n_above, n_above)] = c_a
    r_t, j_t = np.nonzero(np.arange(tied.shape[1]) < need[:, None])
    fixed[r_t, n_above[r_t] + j_t] = tied[r_t, j_t]
    return fixed


def drop_self(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A kNN list of a set against itself ([N, K], found with K = k + 1) less each row's own
    entry: [N, K - 1]. With duplicate rows the own entry may be crowded out of the list; such a
    row drops its last entry instead."""
    n = len(idx)
    own = idx == np.arange(n)[:, None]
    keep = ~own
    keep[own.sum(1) == 0, -1] = False
    return scores[keep].reshape(n, -1), idx[keep].reshape(n, -1)

