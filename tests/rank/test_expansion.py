"""alpha-QE, DBA and the expansion they share against naive numpy loops and golden cases."""
import numpy as np
import pytest

from retrieval.rank.expansion import alpha_qe, dba, expand

from rank_vectors import unit


def naive_qe(q, d, k, alpha):
    out = []
    for v in q:
        s = d @ v
        order = sorted(range(len(d)), key=lambda j: (-s[j], j))[:k]
        acc = v.astype(np.float64).copy()
        for j in order:
            acc += max(s[j], 0.0) ** alpha * d[j]
        out.append(acc / np.linalg.norm(acc))
    return np.array(out)


def naive_dba(d, k, alpha):
    out = []
    for i, v in enumerate(d):
        s = d @ v
        order = [j for j in sorted(range(len(d)), key=lambda j: (-s[j], j)) if j != i][:k]
        acc = v.astype(np.float64).copy()
        for j in order:
            acc += max(s[j], 0.0) ** alpha * d[j]
        out.append(acc / np.linalg.norm(acc))
    return np.array(out)


@pytest.mark.parametrize("k,alpha", [(1, 0.0), (3, 3.0), (5, 1.0)])
def test_alpha_qe_matches_naive(data, k, alpha):
    q, d = data
    np.testing.assert_allclose(alpha_qe(q, d, k, alpha), naive_qe(q, d, k, alpha), atol=1e-5)


@pytest.mark.parametrize("k,alpha", [(1, 0.0), (3, 3.0)])
def test_dba_matches_naive_and_excludes_self(data, k, alpha):
    _, d = data
    np.testing.assert_allclose(dba(d, k, alpha), naive_dba(d, k, alpha), atol=1e-5)


def test_qe_golden_two_dimensions():
    # query (1, 0); neighbours a = (0.6, 0.8) with s = 0.6, b = (0, 1) with s = 0
    # alpha = 1, k = 2: q' = (1, 0) + 0.6 * (0.6, 0.8) + 0 * (0, 1) = (1.36, 0.48)
    q = np.array([[1.0, 0.0]], np.float32)
    d = np.array([[0.6, 0.8], [0.0, 1.0]], np.float32)
    expected = np.array([1.36, 0.48]) / np.hypot(1.36, 0.48)
    np.testing.assert_allclose(alpha_qe(q, d, 2, 1.0)[0], expected, atol=1e-6)


def test_dba_with_duplicate_rows_drops_exactly_one_self():
    d = unit(np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32))
    out = dba(d, 1, 1.0)
    # rows 0 and 1 are each other's neighbour with s = 1: both stay (1, 0)
    np.testing.assert_allclose(out[:2], [[1, 0], [1, 0]], atol=1e-6)


def test_missing_neighbours_weigh_nothing_in_expansion():
    # an approximate list may end in -1 padding: expand must ignore it even for alpha 0
    db = np.eye(3, dtype=np.float32)
    v = np.array([[1.0, 0.0, 0.0]], np.float32)
    out = expand(v, db, np.array([[0.5, -np.inf]], np.float32), np.array([[1, -1]]), alpha=0.0)
    np.testing.assert_allclose(out, [[1 / np.sqrt(2), 1 / np.sqrt(2), 0.0]], atol=1e-6)
