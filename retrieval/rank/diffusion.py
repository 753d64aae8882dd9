"""Diffusion on the references' kNN graph (Iscen et al., CVPR 2017), with sparse matrices.

Definition (all in float64):

* similarities ``s = x . y`` of L2-normalised rows. Neighbour lists are those of
  :func:`retrieval.kreciprocal.neighbour_lists` (faiss candidates re-scored in float64, sorted
  by ``(round(2 - 2 s, 12), index)``).
* graph: each reference's ``k`` nearest other references (its own entry removed; with exact
  duplicates the own entry may be missing from the list, then the last entry is dropped),
  weight ``max(s, 0) ** gamma``; symmetrised as in the paper by mutual neighbourhood,
  ``W = min(W, W^T)`` (an edge survives only if each end lists the other);
  ``S = D^-1/2 W D^-1/2`` with ``D = diag(W 1)`` (a reference without a mutual neighbour has
  an empty row and column).
* query: ``y`` holds the query's top ``query_k`` references by ``(round(2 - 2 s, 12), index)``
  with weight ``max(s, 0) ** gamma``, zero elsewhere.
* ranking: ``f`` solves ``(I - alpha S) f = y``; references are ranked by ``f`` descending. Equal
  ``f`` -- in practice ``f = 0`` exactly, references the diffusion did not reach: other
  components of the graph, or more than ``maxiter`` hops away -- are ordered by the query's
  cosine similarity, descending, then by lower index. (Ordering that tail by index alone would
  throw away the plain ranking there.) f values that are equal only in exact arithmetic
  (e.g. for exact duplicate references) are ordered by their floating-point values. With
  ``alpha = 0``, ``f = y`` and the ranking is the plain cosine ranking.

Precision: the definition above is float64 (``dtype=np.float64``). The default
``dtype=np.float32`` computes the query similarities and runs the solve in float32 (the graph
is built in float64 and rounded): about twice as fast, and after the default 20 iterations the
ranking is the float64 one up to near-ties; seeds are then taken by float32 similarity.

Solver: conjugate gradients, one independent CG per query (``I - alpha S`` is symmetric
positive definite for ``0 <= alpha < 1`` since ``|eig(S)| <= 1``), run for a block of B queries
at once on a dense [G, B] array: each iteration does one sparse-times-dense product
``S @ P`` for all B columns, and per-column scalars (``rho``, step, ``beta``). A column stops
changing once its residual is ``< tol * ||y||`` (scipy's ``cg`` test, checked before each
iteration), and every column stops after ``maxiter`` iterations. This is exactly
``scipy.sparse.linalg.cg(I - alpha S, y, rtol=tol, maxiter=maxiter)`` per query (x0 = 0, no
preconditioner), up to float rounding, but it reads S once per iteration per block instead of
once per query. With the defaults (alpha = 0.99, maxiter = 20) CG is truncated, as in the
paper, not converged. Blocks run on a thread pool (scipy's sparse products and numpy release
the GIL). Memory: a handful of [G, B] arrays per thread, plus the sparse graph. Cost: about
``maxiter * nnz(S) * Q`` multiply-adds in sparse products (no dense G x G or Q x G matrix).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from retrieval.kreciprocal import DECIMALS, neighbour_lists, top_columns
from retrieval.metrics import topk_indices


def diffusion(queries: np.ndarray, references: np.ndarray, k: int = 50, alpha: float = 0.99,
              gamma: float = 3.0, top_k: int = 1000, query_k: int = 10, tol: float = 1e-6,
              maxiter: int = 20, *, dtype=np.float32, block: int = 64,
              n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``min(top_k, G)`` references of each query by diffusion score ``f`` (module docstring).

    Returns ``(scores, indices)``: scores = ``f`` as float32 [Q, K], indices int64 [Q, K], best
    first. ``dtype`` is the precision of the query similarities and of the solve: float32
    (default, about twice as fast; enough for a ranking after 20 iterations) or float64 (the
    exact definition; needed to converge to tolerances below ~1e-6). ``block`` queries are
    solved together; ``n_threads`` blocks run at once (default: the number of CPUs).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    references = np.ascontiguousarray(references, dtype=np.float32)
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise ValueError(f"shapes do not match: queries {queries.shape}, references {references.shape}")
    if k < 1 or query_k < 1 or top_k < 0 or maxiter < 0 or block < 1:
        raise ValueError(f"need k >= 1, query_k >= 1, top_k >= 0, maxiter >= 0, block >= 1; got "
                         f"k={k}, query_k={query_k}, top_k={top_k}, maxiter={maxiter}, block={block}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
    n_q, n_g = len(queries), len(references)
    kb = min(top_k, n_g)
    out_s = np.zeros((n_q, kb), np.float32)
    out_i = np.zeros((n_q, kb), np.int64)
    if n_q == 0 or kb == 0:
        return out_s, out_i

    s_mat = reference_graph(references, k, gamma).astype(dtype)
    refs = references.astype(dtype)

    def run(a: int) -> None:
        b = min(a + block, n_q)
        sims = queries[a:b].astype(dtype) @ refs.T  # [B, G]
        key = -np.round(2.0 - 2.0 * sims, DECIMALS) if dtype == np.float64 else sims
        seeds = top_columns(key, min(query_k, n_g))
        y = np.zeros((n_g, b - a), dtype)
        cols = np.repeat(np.arange(b - a), seeds.shape[1])
        y[seeds.ravel(), cols] = np.maximum(np.take_along_axis(sims, seeds, 1).ravel(), 0.0) ** gamma
        f = block_cg(s_mat, alpha, y, tol, maxiter).T  # [B, G]
        idx = _top_lex(f, sims, kb)
        out_s[a:b] = np.take_along_axis(f, idx, 1)
        out_i[a:b] = idx

    starts = range(0, n_q, block)
    workers = max(1, min(n_threads or os.cpu_count() or 1, len(starts)))
    progress = dict(desc="diffusion", total=len(starts), unit="block", disable=None, leave=False)
    if workers == 1:
        for a in tqdm(starts, **progress):
            run(a)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(tqdm(pool.map(run, starts), **progress))
    return out_s, out_i


def reference_graph(references: np.ndarray, k: int, gamma: float) -> sp.csr_matrix:
    """``S = D^-1/2 W D^-1/2`` of the mutual kNN graph, ``W = min(W, W^T)``, float64 CSR [G, G]."""
    references = np.ascontiguousarray(references, dtype=np.float32)
    n = len(references)
    if n < 2:
        return sp.csr_matrix((n, n))
    sims, idx = neighbour_lists(references, k + 1)
    own = idx == np.arange(n)[:, None]
    keep = ~own
    keep[own.sum(1) == 0, -1] = False  # own entry crowded out by duplicates: drop the last instead
    sims = sims[keep].reshape(n, -1)
    idx = idx[keep].reshape(n, -1)
    rows = np.repeat(np.arange(n), idx.shape[1])
    w = sp.csr_matrix((np.maximum(sims, 0.0).ravel() ** gamma, (rows, idx.ravel())), shape=(n, n))
    w = w.minimum(w.T).tocsr()
    w.eliminate_zeros()
    deg = np.asarray(w.sum(axis=1)).ravel()
    inv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
    w = w.tocoo()
    s = sp.csr_matrix((w.data * inv[w.row] * inv[w.col], (w.row, w.col)), shape=(n, n))
    s.sort_indices()
    return s


def block_cg(s_mat: sp.csr_matrix, alpha: float, y: np.ndarray, tol: float, maxiter: int) -> np.ndarray:
    """Independent CG solves of ``(I - alpha S) x = y[:, j]`` for every column j, x0 = 0.

    Column j stops once ``||r_j|| < tol * ||y_j||`` (checked before each iteration, as scipy's
    ``cg``) and all stop after ``maxiter`` iterations. Returns x, [G, B] float64.
    """
    x = np.zeros_like(y)
    r = y.copy()
    rho = np.einsum("ij,ij->j", r, r)
    bound = (tol ** 2) * rho  # ||r||^2 < tol^2 ||y||^2
    p = r.copy()
    for it in range(maxiter):
        active = rho >= bound
        active &= rho > 0
        if not active.any():
            break
        if it > 0:
            beta = np.divide(rho, rho_prev, out=np.zeros_like(rho), where=active)
            p *= beta
            p += r
        q = s_mat @ p
        q *= -alpha
        q += p
        pq = np.einsum("ij,ij->j", p, q)
        step = np.divide(rho, pq, out=np.zeros_like(rho), where=active & (pq > 0))
        x += step * p
        q *= step
        r -= q
        rho_prev = rho
        rho = np.where(active, np.einsum("ij,ij->j", r, r), rho)
    return x


def _top_lex(f: np.ndarray, sims: np.ndarray, k: int) -> np.ndarray:
    """Column indices [B, k] of each row's best k by ``(f desc, sims desc, index asc)``, best first."""
    n_rows, n_cols = f.shape
    if k >= n_cols:
        chosen = np.broadcast_to(np.arange(n_cols), f.shape).copy()
    else:
        chosen = np.argpartition(-f, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(f, chosen, 1).min(axis=1)
        n_above = (f > kth[:, None]).sum(axis=1)
        bad = np.flatnonzero((f >= kth[:, None]).sum(axis=1) > k)  # a tie group straddles the k-th place
        if len(bad):
            sub_f, kth_b, above_b = f[bad], kth[bad, None], n_above[bad]
            need = k - above_b
            key2 = np.where(sub_f == kth_b, sims[bad], -np.inf)
            tied = topk_indices(key2, int(need.max()))  # by (sims desc, index asc)
            fixed = np.empty((len(bad), k), np.int64)
            r_a, c_a = np.nonzero(sub_f > kth_b)
            fixed[r_a, np.arange(len(r_a)) - np.repeat(np.cumsum(above_b) - above_b, above_b)] = c_a
            r_t, j_t = np.nonzero(np.arange(tied.shape[1]) < need[:, None])
            fixed[r_t, above_b[r_t] + j_t] = tied[r_t, j_t]
            chosen[bad] = fixed
    f_sel = np.take_along_axis(f, chosen, 1)
    s_sel = np.take_along_axis(sims, chosen, 1)
    order = np.lexsort((chosen, -s_sel, -f_sel), axis=1)
    return np.take_along_axis(chosen, order, 1)
