"""Query expansion and database-side augmentation: pure functions on L2-normalised rows.

Both replace a vector by a weighted sum of itself and its nearest neighbours, weight
``max(similarity, 0) ** alpha`` (alpha-QE, Radenovic et al. 2018; alpha = 0 gives average QE
over the top ``k``), then re-normalise.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.config import RerankParams
from retrieval.search import knn


def expand(vectors: np.ndarray, database: np.ndarray, scores: np.ndarray, indices: np.ndarray,
           alpha: float) -> np.ndarray:
    """normalise(v + sum_j max(s_j, 0)^alpha * database[i_j]) for each row's neighbours
    (a missing neighbour, index -1 from an approximate index, weighs nothing)."""
    w = np.maximum(scores, 0.0).astype(np.float32) ** np.float32(alpha)  # [N, k]
    w = np.where(indices < 0, np.float32(0.0), w)
    out = vectors.astype(np.float32) + np.einsum("nk,nkd->nd", w, database[np.maximum(indices, 0)])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


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
    scores, idx = knn(database, database, k + 1, index)
    # drop each row's own match; with duplicate rows the self match may not come first
    own = idx == np.arange(len(database))[:, None]
    keep = ~own
    keep[own.sum(1) == 0, -1] = False  # no self in the list: drop the last neighbour instead
    scores = scores[keep].reshape(len(database), -1)
    idx = idx[keep].reshape(len(database), -1)
    return expand(database, database, scores, idx, alpha)


def rank(queries: np.ndarray, database: np.ndarray, p: RerankParams, k: int,
         steps: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, indices) of ``database`` for each query after the re-ranking ``steps``.

    Steps run in order (default: ``p.steps``): ``dba`` re-writes the database vectors, ``qe``
    the query vectors; ``kreciprocal`` or ``diffusion``, if present, is last and makes the final
    ranking from the vectors as they then are. With no ranking step it is cosine search with
    ``p.index`` (exact by default).
    """
    steps = p.steps if steps is None else list(steps)
    for step in steps:
        if step == "dba":
            database = dba(database, p.dba.k, p.dba.alpha, p.index)
        elif step == "qe":
            queries = alpha_qe(queries, database, p.qe.k, p.qe.alpha, p.index)
        elif step == "kreciprocal":
            from retrieval.kreciprocal import k_reciprocal
            c = p.kreciprocal
            return k_reciprocal(queries, database, c.k1, c.k2, c.lambda_value, top_k=k)
        elif step == "diffusion":
            from retrieval.diffusion import diffusion
            c = p.diffusion
            return diffusion(queries, database, k=c.k, alpha=c.alpha, gamma=c.gamma, top_k=k, query_k=c.query_k)
        else:
            raise ValueError(f"unknown re-ranking step {step!r}")
    return knn(queries, database, k, p.index)


def validation_rankings(valid, p: RerankParams, k: int = 1000) -> dict[str, np.ndarray]:
    """Validation rankings ``[Q, k]`` (reference indices) with no re-ranking, each configured step
    alone, and all of them.

    ``valid`` is a :class:`retrieval.features.Features` with labels and roles: the queries are
    its rows of role ``query`` and the database the others, in file order. The entry ``final``
    is the configured chain, the one the pipeline's score uses.
    """
    q = valid.roles == "query"
    variants = {"none": []}
    variants.update({s: [s] for s in p.steps})
    variants["final"] = list(p.steps)
    return {name: rank(valid.embeddings[q], valid.embeddings[~q], p, k, steps)[1] for name, steps in variants.items()}


def validation_ablation(valid, rankings: dict[str, np.ndarray], k: int = 1000) -> dict:
    """:func:`retrieval.metrics.retrieval_metrics` of each of :func:`validation_rankings`' rankings."""
    from retrieval.metrics import retrieval_metrics

    q = valid.roles == "query"
    return {name: retrieval_metrics(ranked, valid.labels[q], valid.labels[~q], k) for name, ranked in rankings.items()}
