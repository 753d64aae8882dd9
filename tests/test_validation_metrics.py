"""A validation set's exact cosine-search metrics against a naive search and AP loop."""
import numpy as np
import pytest

from retrieval.metrics import MAP, P1, map_key
from retrieval.validation_metrics import QUERY_AP, validation_map


def naive_ap(row, label, ref_labels, k):
    n_rel = int((ref_labels == label).sum())
    hits, total = 0, 0.0
    for rank, j in enumerate(row[:k], start=1):
        if ref_labels[j] == label:
            hits += 1
            total += hits / rank
    return total / min(n_rel, k) if n_rel else 0.0


def test_golden_two_dimensions():
    # queries (1, 0) "a" and (0, 1) "b"; references a (0.8, 0.6), b (0.6, 0.8), a (0, 1)
    emb = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [0, 1]], np.float32)
    roles = np.array(["query", "reference", "query", "reference", "reference"])
    labels = np.array(["a", "a", "b", "b", "a"])
    m = validation_map(emb, roles, labels, per_query=True)
    # query a: a(0.8), b(0.6), a(0) -> (1 + 2/3) / 2; query b: a(1.0), b(0.8), a(0.6) -> (1/2) / 1
    assert m.pop(QUERY_AP) == pytest.approx([5 / 6, 1 / 2])
    assert m == pytest.approx({MAP: (5 / 6 + 1 / 2) / 2, P1: 0.5, "n_queries": 2})
    assert QUERY_AP not in validation_map(emb, roles, labels)


def test_matches_a_naive_search_and_ap_loop_at_a_cut_off():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(80, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.integers(0, 5, 80).astype(str)
    roles = np.where(rng.random(80) < 0.3, "query", "reference")
    q = roles == "query"
    sims = emb[q] @ emb[~q].T
    order = np.array([sorted(range(sims.shape[1]), key=lambda j: (-s[j], j)) for s in sims])
    want = [naive_ap(row, lab, labels[~q], 10) for row, lab in zip(order, labels[q])]
    m = validation_map(emb, roles, labels, 10, per_query=True)
    np.testing.assert_allclose(m[QUERY_AP], want, rtol=1e-12)
    assert m[map_key(10)] == pytest.approx(np.mean(want))
    assert m[P1] == pytest.approx(np.mean(labels[~q][order[:, 0]] == labels[q]))
