"""The metrics of a validation set's exact cosine search: its rows of role ``query`` against its
other rows, as training (each epoch) and extraction (the backbones' fusion weights) score
embeddings before any re-ranking."""
from __future__ import annotations

import numpy as np

from retrieval.metrics import MAP_K, per_query_metrics, summarise
from retrieval.rank.knn import knn

QUERY_AP = "query_ap"  # validation_map's per-query AP@k (a list of floats, in query order)


def validation_map(embeddings: np.ndarray, roles: np.ndarray, labels: np.ndarray, k: int = MAP_K,
                   per_query: bool = False) -> dict:
    """Exact cosine-search metrics (:func:`retrieval.metrics.retrieval_metrics`: mAP@k, by default
    the pipeline's mAP@1000, and P@1) of a validation set: its rows of role ``query`` against its
    other rows; with ``per_query``, also each query's AP@k under :data:`QUERY_AP`."""
    q = np.asarray(roles) == "query"
    labels = np.asarray(labels)
    _, idx = knn(embeddings[q], embeddings[~q], k)
    ap, first_hit = per_query_metrics(idx, labels[q], labels[~q], k)
    m = summarise(ap, first_hit, k)
    if per_query:
        m[QUERY_AP] = ap.tolist()
    return m
