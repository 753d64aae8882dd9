"""The re-ranking chain ``rerank.steps``: :func:`rank` runs DBA and alpha-QE on the vectors
(:mod:`retrieval.rank.expansion`), then at most one of k-reciprocal re-ranking or diffusion, or
else a plain kNN search; and the validation rankings the ``rerank`` stage scores and saves
(no re-ranking, each step alone, the whole chain).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.config import RerankParams
from retrieval.metrics import retrieval_metrics
from retrieval.rank.expansion import alpha_qe, dba
from retrieval.rank.knn import knn


def rank(queries: np.ndarray, database: np.ndarray, p: RerankParams, k: int,
         steps: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, indices) of ``database`` for each query after the re-ranking ``steps``.

    Steps run in order (``None``: ``p.steps``): ``dba`` re-writes the database vectors, ``qe``
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
            from retrieval.rank.kreciprocal import k_reciprocal
            return k_reciprocal(queries, database, p.kreciprocal, top_k=k)
        elif step == "diffusion":
            from retrieval.rank.diffusion import diffusion
            return diffusion(queries, database, p.diffusion, top_k=k)
        else:
            raise ValueError(f"unknown re-ranking step {step!r}")
    return knn(queries, database, k, p.index)


def validation_rankings(valid, p: RerankParams, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-``k`` (scores, indices) ``[Q, min(k, G)]`` of the validation queries with no
    re-ranking (``none``), each configured step alone, and the whole chain (``final``), each
    chain run once.

    ``valid`` is a :class:`retrieval.embed.feature_file.Features` with labels and roles: the
    queries are its rows of role ``query`` and the database the others, in file order. ``final``
    is the configured chain: the one the pipeline's validation score uses and the report shows.
    """
    q = valid.roles == "query"
    variants = {"none": [], **{s: [s] for s in p.steps}, "final": list(p.steps)}
    return {name: rank(valid.embeddings[q], valid.embeddings[~q], p, k, steps) for name, steps in variants.items()}


def validation_ablation(valid, rankings: dict[str, tuple[np.ndarray, np.ndarray]], k: int) -> dict:
    """:func:`retrieval.metrics.retrieval_metrics` at cut-off ``k`` of each of
    :func:`validation_rankings`' ``(scores, indices)`` of ``valid``'s queries."""
    q = valid.roles == "query"
    return {name: retrieval_metrics(idx, valid.labels[q], valid.labels[~q], k) for name, (_, idx) in rankings.items()}
