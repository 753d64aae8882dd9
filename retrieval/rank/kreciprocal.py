"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on the sparse top-k neighbour graph.

The final distance of a query and a reference is ``(1 - lambda) J + lambda d``: ``d = 2 - 2 s`` (the
squared euclidean distance of unit vectors) and ``J`` the Jaccard distance of their expanded
k-reciprocal neighbour sets, weighted by ``exp(-d)``; distances are compared after rounding to
12 decimals, ties by the lower index. Nothing N x N is ever dense, and the returned list is the
dense algorithm's. The full specification, the sparse evaluation and the proof that it returns
the dense list: ``docs/kreciprocal.md``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from retrieval.config import KReciprocalParams
from retrieval.rank.knn import knn
from retrieval.rank.topk import best_first, topk_indices

_MARGIN = 8  # extra neighbours fetched by the float32 search before the float64 re-sort
DECIMALS = 12  # distances are compared after np.round(x, DECIMALS); see docs/kreciprocal.md
_BLOCK = 1 << 23  # elements of a float64 [chunk, G] similarity block (64 MiB)
_PAIR_CHUNK = 8192  # pairs per float64 gather-dot


def k_reciprocal(queries: np.ndarray, references: np.ndarray, p: KReciprocalParams,
                 top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``min(top_k, G)`` references of each query after k-reciprocal re-ranking with
    ``rerank.kreciprocal``'s ``p.k1``, ``p.k2`` and ``p.lambda_value``.

    ``queries`` [Q, D] and ``references`` [G, D] are L2-normalised rows. Returns
    ``(scores, indices)``: scores = ``-final_distance`` as float32 [Q, K] (higher is better),
    indices int64 [Q, K], best first; final distances equal after rounding to 12 decimals are
    ordered by the lower reference index. See docs/kreciprocal.md for the exact definition and why the sparse
    evaluation returns the dense algorithm's list.
    """
    k1, k2, lambda_value = p.k1, p.k2, p.lambda_value
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    references = np.ascontiguousarray(references, dtype=np.float32)
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise ValueError(f"shapes do not match: queries {queries.shape}, references {references.shape}")
    if k1 < 1 or k2 < 1 or top_k < 0:
        raise ValueError(f"need k1 >= 1, k2 >= 1, top_k >= 0; got k1={k1}, k2={k2}, top_k={top_k}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value}")
    n_q, n_g = len(queries), len(references)
    kb = min(top_k, n_g)
    if n_q == 0 or kb == 0:
        return np.zeros((n_q, kb), np.float32), np.zeros((n_q, kb), np.int64)
    lam = float(lambda_value)

    if lam < 1.0:
        x = np.concatenate([queries, references])
        v = _v_matrix(x, k1, k2)
        row_sums = np.asarray(v.sum(axis=1)).ravel()
        inverted = v[n_q:].T.tocsr()  # N x G: for column l, the references j with V[j, l] > 0
        inverted.sort_indices()
        v_q = v[:n_q]
    refs64 = references.astype(np.float64)
    chunk = max(1, _BLOCK // max(n_g, 1))
    out_s = np.empty((n_q, kb), np.float32)
    out_i = np.empty((n_q, kb), np.int64)
    for a in tqdm(range(0, n_q, chunk), desc="k-reciprocal", unit="block", disable=None, leave=False):
        b = min(a + chunk, n_q)
        sims = queries[a:b].astype(np.float64) @ refs64.T  # [c, G]
        if lam == 1.0:
            overlap = sp.csr_matrix((b - a, n_g))
            rs_q = rs_g = None
        else:
            overlap = _jaccard_numerator(v_q[a:b], inverted, n_g)
            rs_q, rs_g = row_sums[a:b], row_sums[n_q:]
        s, i = _rank_chunk(sims, overlap, rs_q, rs_g, lam, kb)
        out_s[a:b], out_i[a:b] = s, i
    return out_s, out_i


# --------------------------------------------------------------------------- neighbour graph

def _pair_sims(x: np.ndarray, y: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float64 ``x[rows[t]] . y[cols[t]]`` for every pair t, in chunks."""
    out = np.empty(len(rows), np.float64)
    for a in range(0, len(rows), _PAIR_CHUNK):
        b = min(a + _PAIR_CHUNK, len(rows))
        out[a:b] = np.einsum("ij,ij->i", x[rows[a:b]], y[cols[a:b]], dtype=np.float64, casting="same_kind")
    return out


def neighbour_lists(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``min(k, N)`` rows of ``x`` (itself included) by ``(round(2 - 2 s), index)``.

    Returns float64 similarities and int64 indices, both [N, min(k, N)]. Exact search (float32) gives
    ``k + 8`` candidates; they are re-scored in float64 and re-sorted, so the lists are those of
    the float64 dense ranking unless float32 rounding moved an entry past 8 others.
    """
    n = len(x)
    _, idx = knn(x, x, min(n, k + _MARGIN))
    rows = np.repeat(np.arange(n), idx.shape[1])
    s64 = _pair_sims(x, x, rows, idx.ravel()).reshape(idx.shape)
    order = best_first(-np.round(2.0 - 2.0 * s64, DECIMALS), ids=idx, axis=1)[:, :min(k, n)]  # nearest first
    return np.take_along_axis(s64, order, 1), np.take_along_axis(idx, order, 1)


def _indicator(lists: np.ndarray, n: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(lists)), lists.shape[1])
    m = sp.csr_matrix((np.ones(lists.size, np.int8), (rows, lists.ravel())), shape=(n, n))
    m.sum_duplicates()
    return m


def _reciprocal(lists: np.ndarray, n: int) -> sp.csr_matrix:
    """R[i, j] = 1 iff j is in i's list and i in j's list (int8 CSR, sorted indices)."""
    a = _indicator(lists, n)
    r = a.multiply(a.T).tocsr()
    r.eliminate_zeros()
    r.sort_indices()
    return r


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[t], starts[t] + counts[t])`` over t."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts.astype(np.int64) - offsets, counts) + np.arange(total, dtype=np.int64)


def _v_matrix(x: np.ndarray, k1: int, k2: int) -> sp.csr_matrix:
    """The N x N CSR matrix V after expansion, exp weights and local query expansion."""
    n = len(x)
    h = int(np.around(k1 / 2))
    _, lists = neighbour_lists(x, max(k1 + 1, k2))
    r = _reciprocal(lists[:, :k1 + 1], n)
    rh = _reciprocal(lists[:, :h + 1], n)

    # expansion: triples (i, c, l) for c in R(i), l in Rh(c); count l in R(i) per (i, c)
    pair_i = np.repeat(np.arange(n), np.diff(r.indptr))
    pair_c = r.indices.astype(np.int64)
    rh_len = np.diff(rh.indptr)[pair_c]
    pos = _ranges(rh.indptr[pair_c], rh_len)
    trip_i = np.repeat(pair_i, rh_len)
    trip_l = rh.indices[pos].astype(np.int64)
    r_keys = pair_i * n + pair_c  # sorted: CSR rows in order, sorted indices
    keys = trip_i * n + trip_l
    at = np.minimum(np.searchsorted(r_keys, keys), len(r_keys) - 1) if len(r_keys) else keys * 0
    inside = (r_keys[at] == keys) if len(r_keys) else np.zeros(len(keys), bool)
    pair_id = np.repeat(np.arange(len(pair_c)), rh_len)
    common = np.bincount(pair_id, weights=inside, minlength=len(pair_c))
    qualifies = 3 * common > 2 * rh_len
    take = np.repeat(qualifies, rh_len)
    e_i = np.concatenate([pair_i, trip_i[take]])
    e_l = np.concatenate([pair_c, trip_l[take]])
    e_keys = np.unique(e_i * n + e_l)
    e_i, e_l = e_keys // n, e_keys % n

    # weights exp(-d) with d = 2 - 2 s, normalised per row
    w = np.exp(-(2.0 - 2.0 * _pair_sims(x, x, e_i, e_l)))
    sums = np.bincount(e_i, weights=w, minlength=n)
    w = w / sums[e_i]
    v = sp.csr_matrix((w, (e_i, e_l)), shape=(n, n))

    if k2 > 1:
        q_lists = lists[:, :min(k2, n)]
        rows = np.repeat(np.arange(n), q_lists.shape[1])
        qe = sp.csr_matrix((np.full(q_lists.size, 1.0 / q_lists.shape[1]), (rows, q_lists.ravel())),
                           shape=(n, n))
        v = (qe @ v).tocsr()
    v.sort_indices()
    return v


# --------------------------------------------------------------------------- per-query work

def _jaccard_numerator(v_rows: sp.csr_matrix, inverted: sp.csr_matrix, n_g: int) -> sp.csr_matrix:
    """``sum_l min(V[q, l], V[r, l])`` for the rows q of ``v_rows`` and every reference r with a
    nonzero value, as a [c, G] CSR matrix (sorted indices, no explicit zeros)."""
    c = v_rows.shape[0]
    rows = np.repeat(np.arange(c), np.diff(v_rows.indptr))
    cols = v_rows.indices
    counts = inverted.indptr[cols + 1] - inverted.indptr[cols]
    pos = _ranges(inverted.indptr[cols], counts)
    mins = np.minimum(np.repeat(v_rows.data, counts), inverted.data[pos])
    m = sp.coo_matrix((mins, (np.repeat(rows, counts), inverted.indices[pos])), shape=(c, n_g)).tocsr()
    m.sum_duplicates()
    m.sort_indices()
    return m


def _rank_chunk(sims: np.ndarray, overlap: sp.csr_matrix, rs_q, rs_g, lam: float,
                kb: int) -> tuple[np.ndarray, np.ndarray]:
    """Final ranking of one chunk of queries from its candidates (see docs/kreciprocal.md)."""
    c, n_g = sims.shape
    o_rows = np.repeat(np.arange(c, dtype=np.int64), np.diff(overlap.indptr))
    o_keys = o_rows * n_g + overlap.indices
    if lam > 0.0:
        base = topk_indices(-np.round(2.0 - 2.0 * sims, DECIMALS), kb)
    else:  # every non-overlapping reference ties at final = 1: the lowest indices fill the list
        n_base = min(n_g, kb + int(np.diff(overlap.indptr).max(initial=0)))
        base = np.broadcast_to(np.arange(n_base), (c, n_base))
    mask = np.zeros((c, n_g), bool)
    mask[np.arange(c)[:, None], base] = True
    mask[o_rows, overlap.indices] = True
    rows, cols = np.nonzero(mask)  # the candidates B | O, row-major (keys ascending)
    keys = rows * n_g + cols

    d = 2.0 - 2.0 * sims[rows, cols]
    if lam == 1.0:
        final = d
    else:
        m = np.zeros(len(keys))
        if len(o_keys):
            at = np.minimum(np.searchsorted(o_keys, keys), len(o_keys) - 1)
            hit = o_keys[at] == keys
            m[hit] = overlap.data[at[hit]]
        smax = rs_q[rows] + rs_g[cols] - m
        jac = 1.0 - np.divide(m, smax, out=np.zeros_like(m), where=smax > 0)
        final = (1.0 - lam) * jac + lam * d
    final = np.round(final, DECIMALS)
    order = best_first(-final, ids=cols, groups=rows)  # lowest final distance first, per query
    start = np.searchsorted(rows[order], np.arange(c))
    pick = order[start[:, None] + np.arange(kb)]
    return (-final[pick]).astype(np.float32), cols[pick].astype(np.int64)
