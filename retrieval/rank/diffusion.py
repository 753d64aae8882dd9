"""Diffusion on the references' kNN graph (Iscen et al., CVPR 2017), with sparse matrices.

The references' mutual kNN graph ``S`` (weights ``max(s, 0) ** gamma``, normalised); a query
seeds ``y`` with its top ``query_k`` references and references are ranked by ``f`` solving
``(I - alpha S) f = y`` (truncated conjugate gradients, a block of queries at once); ties in
``f`` by cosine similarity, then by index. The full definition, precision and solver:
``docs/diffusion.md``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from retrieval.config import DiffusionParams
from retrieval.rank.kreciprocal import DECIMALS, neighbour_lists
from retrieval.rank.topk import drop_self, topk_indices, topk_indices_by
from retrieval.resources import usable_cores


def diffusion(queries: np.ndarray, references: np.ndarray, p: DiffusionParams, top_k: int,
              tol: float = 1e-6, maxiter: int = 20, *, dtype=np.float32, block: int = 64,
              n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``min(top_k, G)`` references of each query by diffusion score ``f`` (docs/diffusion.md),
    with ``rerank.diffusion``'s ``p.k``, ``p.alpha``, ``p.gamma`` and ``p.query_k``.

    Returns ``(scores, indices)``: scores = ``f`` as float32 [Q, K], indices int64 [Q, K], best
    first. ``dtype`` is the precision of the query similarities and of the solve: float32
    (default, about twice as fast; enough for a ranking after 20 iterations) or float64 (the
    exact definition; needed to converge to tolerances below ~1e-6). ``block`` queries are
    solved together; ``n_threads`` blocks run at once (default: the number of CPUs).
    """
    k, alpha, gamma, query_k = p.k, p.alpha, p.gamma, p.query_k
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
        seeds = topk_indices(key, min(query_k, n_g))
        y = np.zeros((n_g, b - a), dtype)
        cols = np.repeat(np.arange(b - a), seeds.shape[1])
        y[seeds.ravel(), cols] = np.maximum(np.take_along_axis(sims, seeds, 1).ravel(), 0.0) ** gamma
        f = block_cg(s_mat, alpha, y, tol, maxiter).T  # [B, G]
        idx = topk_indices_by(f, sims, kb)
        out_s[a:b] = np.take_along_axis(f, idx, 1)
        out_i[a:b] = idx

    starts = range(0, n_q, block)
    workers = max(1, min(n_threads or usable_cores(), len(starts)))
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
    sims, idx = drop_self(*neighbour_lists(references, k + 1))
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
