"""The re-ranking chain ``rerank.steps``: :func:`rank` runs DBA and alpha-QE on the vectors
(:mod:`retrieval.rank.expansion`), then at most one of k-reciprocal re-ranking or diffusion, or
else a plain kNN search; and the validation rankings the ``rerank`` stage scores and saves
(each step alone, the whole chain).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.config import RerankParams
from retrieval.rank.expansion import alpha_qe, dba
from retrieval.rank.knn import knn


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
            from retrieval.rank.kreciprocal import k_reciprocal
            c = p.kreciprocal
            return k_reciprocal(queries, database, c.k1, c.k2, c.lambda_value, top_k=k)
        elif step == "diffusion":
            from retrieval.rank.diffusion import diffusion
            c = p.diffusion
            return diffusion(queries, database, k=c.k, alpha=c.alpha, gamma=c.gamma, top_k=k, query_k=c.query_k)
        else:
            raise ValueError(f"unknown re-ranking step {step!r}")
    return knn(queries, database, k, p.index)


def validation_rankings(valid, p: RerankParams, k: int = 1000) -> dict[str, np.ndarray]:
    """Validation rankings ``[Q, k]`` (reference indices) with no re-ranking, each configured step
    alone, and all of them.

    ``valid`` is a :class:`retrieval.embed.feature_file.Features` with labels and roles: the queries are
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


def validation_ranking(valid, p: RerankParams) -> tuple[np.ndarray, np.ndarray]:
    """The configured chain's top ``p.k`` (scores, indices) of the validation queries against the
    validation references (``valid`` as in :func:`validation_rankings`): what the report shows."""
    q = valid.roles == "query"
    return rank(valid.embeddings[q], valid.embeddings[~q], p, min(p.k, int((~q).sum())))
