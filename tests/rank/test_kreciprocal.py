"""Sparse k-reciprocal re-ranking against a dense, loop-by-loop version of the published algorithm."""
import numpy as np
import pytest

from retrieval.config import KReciprocalParams
from retrieval.metrics import retrieval_metrics
from retrieval.rank.knn import knn
from retrieval.rank.kreciprocal import k_reciprocal

import rank_vectors
from rank_vectors import unit


def clustered(n_q, n_g, dim=24, n_classes=30, noise=0.35, seed=0):
    return rank_vectors.clustered(n_q, n_g, dim, n_classes, noise, seed, scale=3)


def dense_k_reciprocal(q, g, k1, k2, lam):
    """The published algorithm on full N x N float64 matrices, with plain loops.

    d = 2 - 2 x.y; neighbour lists sorted by (d, index) over all N items, self included
    (distances compared after np.round(., 12), as the module documents, final ones too);
    R(i, k) = {j in first k+1 of i : i in first k+1 of j}; expansion by R(c, round(k1/2)) when
    more than 2/3 of it lies in R(i, k1); V = normalised exp(-d) on the expanded set; V <- mean
    of V over the first k2 list entries (k2 > 1); J = 1 - sum min / sum max (1 if both rows are
    empty); final = (1 - lam) J + lam d, ranked by (final, index). Returns final [Q, G].
    """
    x = np.concatenate([q, g]).astype(np.float64)
    n, nq = len(x), len(q)
    dist = 2.0 - 2.0 * (x @ x.T)
    ranks = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), np.round(dist, 12)), axis=1)
    cache = {}

    def recip(i, k):
        if (i, k) not in cache:
            fwd = ranks[i, :k + 1]
            cache[i, k] = np.array([j for j in fwd if i in ranks[j, :k + 1]], dtype=np.int64)
        return cache[i, k]

    h = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        expanded = list(r)
        for c in r:
            rc = recip(c, h)
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded.extend(rc)
        expanded = np.unique(np.array(expanded, dtype=np.int64))
        if len(expanded):
            w = np.exp(-dist[i, expanded])
            v[i, expanded] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[ranks[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.empty((nq, n - nq))
    for i in range(nq):
        mins = np.minimum(v[i], v[nq:]).sum(axis=1)
        maxs = np.maximum(v[i], v[nq:]).sum(axis=1)
        jac[i] = 1.0 - np.divide(mins, maxs, out=np.zeros_like(mins), where=maxs > 0)
    return (1.0 - lam) * jac + lam * dist[:nq, nq:]


def kp(k1, k2, lambda_value):
    """A KReciprocalParams section (unchecked, so that out-of-range values reach
    :func:`k_reciprocal`'s own checks)."""
    return KReciprocalParams.model_construct(k1=k1, k2=k2, lambda_value=lambda_value)


def dense_top(final, k):
    """Column indices of each row's k smallest np.round(final, 12), ties by lower index."""
    g = final.shape[1]
    return np.lexsort((np.broadcast_to(np.arange(g), final.shape), np.round(final, 12)), axis=1)[:, :k]


@pytest.fixture(scope="module")
def data():
    return clustered(120, 480, seed=1)


@pytest.mark.parametrize("k1,k2,lam,top_k", [
    (20, 6, 0.3, 60),    # the published defaults, truncated list
    (10, 1, 0.5, 480),   # no local query expansion, the full reference list
    (5, 3, 0.0, 40),     # Jaccard only: non-overlapping references tie at 1 and go by index
    (7, 10, 0.8, 100),   # odd k1 (round(3.5) = 4), k2 longer than the k1 + 1 lists
    (3, 2, 1.0, 50),     # original distance only
])
def test_matches_dense_published_algorithm(data, k1, k2, lam, top_k):
    q, g, _, _ = data
    final = dense_k_reciprocal(q, g, k1, k2, lam)
    expected = dense_top(final, top_k)
    scores, idx = k_reciprocal(q, g, kp(k1, k2, lam), top_k)
    assert idx.shape == scores.shape == (len(q), top_k)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(-scores, np.take_along_axis(final, idx, 1), atol=2e-6, rtol=0)


def test_larger_set_with_defaults():
    """N = 2000 with the defaults; with top_k = 100 some returned references come from the
    overlap set outside the query's top 100 by d, so the merge is exercised."""
    q, g, _, _ = clustered(500, 1500, dim=32, n_classes=60, seed=2)
    final = dense_k_reciprocal(q, g, 20, 6, 0.3)
    for top_k in (100, 1000):
        scores, idx = k_reciprocal(q, g, kp(20, 6, 0.3), top_k)
        np.testing.assert_array_equal(idx, dense_top(final, top_k))
        np.testing.assert_allclose(-scores, np.take_along_axis(final, idx, 1), atol=2e-6, rtol=0)
    plain = dense_top(2.0 - 2.0 * (q.astype(np.float64) @ g.astype(np.float64).T), 100)
    _, idx = k_reciprocal(q, g, kp(20, 6, 0.3), 100)
    outside = [len(set(idx[r]) - set(plain[r])) for r in range(len(q))]
    assert sum(outside) > 0


def test_lambda_one_is_plain_cosine_ranking(data):
    q, g, _, _ = data
    scores, idx = k_reciprocal(q, g, kp(20, 6, 1.0), 70)
    s64 = q.astype(np.float64) @ g.astype(np.float64).T
    np.testing.assert_array_equal(idx, dense_top(2.0 - 2.0 * s64, 70))
    ks, ki = knn(q, g, 70)
    np.testing.assert_allclose(-scores, 2.0 - 2.0 * ks, atol=2e-6)
    assert (idx == ki).mean() > 0.99  # faiss's float32 order; may differ only at near-ties


def test_k_reciprocal_must_help_against_non_reciprocal_distractors():
    """Each query q has 10 relevant references: 5 "near" (cos 0.95) and 5 "far" (cos 0.85),
    orthogonal to each other around q. A distractor cluster B of 8 references sits at cos 0.90
    from q, between the two, and a second tight cluster B' of 30 lies next to B (cos ~0.98 to
    B, 0.79 to q). Cosine ranking: 5 near, 8 B, 5 far -> AP ~ 0.73.

    B's own top-21 lists hold B and B' only (all closer to B than q is), so q is not among
    them: B is not k-reciprocal to q, and V[q] gets no mass on B's columns. The relevant
    references all have q (and each other) in their lists and q has them in its top-21, so
    V[q] and V[a] share their support: J(q, a) is small while J(q, b) = 1 (no overlap).
    With lambda = 0.3, final(b) = 0.7 + 0.3 * 0.2 = 0.76 exceeds final(a), and AP becomes 1.
    The query's first k2 = 6 neighbours are itself and the near references, so the local
    query expansion does not pull B's support in.
    """
    rng = np.random.default_rng(5)
    n_groups, sub = 6, 24
    dim = n_groups * sub
    queries, refs, labels = [], [], []
    for grp in range(n_groups):
        basis = np.linalg.qr(rng.normal(size=(sub, sub)))[0].T  # orthonormal rows
        e = np.zeros((sub, dim))
        e[:, grp * sub:(grp + 1) * sub] = basis
        q_dir, b_dir = e[0], e[1]
        queries.append(q_dir)
        for j in range(10):
            cos = 0.95 if j < 5 else 0.85
            refs.append(cos * q_dir + np.sqrt(1 - cos ** 2) * e[2 + j])
            labels.append(f"A{grp}")
        for j in range(8):  # B at 25.8 degrees from q
            refs.append(0.90 * q_dir + 0.436 * b_dir + 0.03 * (e[12 + j % 6] * rng.normal()))
            labels.append(f"B{grp}")
        for j in range(30):  # B' at 38 degrees, next to B
            refs.append(0.788 * q_dir + 0.616 * b_dir + 0.03 * (e[18 + j % 6] * rng.normal()))
            labels.append(f"C{grp}")
    q, g = unit(np.array(queries)), unit(np.array(refs))
    ql, gl = np.array([f"A{i}" for i in range(n_groups)]), np.array(labels)
    before = retrieval_metrics(knn(q, g, 100)[1], ql, gl, 100)["map@100"]
    after = retrieval_metrics(k_reciprocal(q, g, kp(20, 6, 0.3), 100)[1], ql, gl, 100)["map@100"]
    assert before < 0.8
    assert after > before + 0.2
    assert after == pytest.approx(1.0)


def test_top_k_larger_than_gallery_and_single_query(data):
    q, g, _, _ = data
    scores, idx = k_reciprocal(q[:1], g[:30], kp(5, 3, 0.3), 1000)
    assert idx.shape == (1, 30) and sorted(idx[0].tolist()) == list(range(30))
    assert np.all(np.diff(scores[0]) <= 0)
    # the single query alone forms a different joint set than with all queries: check it densely
    final = dense_k_reciprocal(q[:1], g[:30], 5, 3, 0.3)
    np.testing.assert_array_equal(idx, dense_top(final, 30))
    empty_s, empty_i = k_reciprocal(q[:0], g, kp(5, 3, 0.3), 10)
    assert empty_i.shape == (0, 10) and empty_s.shape == (0, 10)


def test_duplicate_vectors_tie_and_match_dense():
    """Exact duplicate references (and a query duplicated among the references) get equal final
    distances and are listed by index; the result still equals the dense algorithm's."""
    q, g, _, _ = clustered(20, 60, dim=8, n_classes=6, seed=7)
    g = np.concatenate([g, g[:10], q[:3]])  # references 60..69 copy 0..9; 70..72 copy queries 0..2
    scores, idx = k_reciprocal(q, g, kp(6, 3, 0.3), len(g))
    assert np.isfinite(scores).all()
    final = dense_k_reciprocal(q, g, 6, 3, 0.3)
    np.testing.assert_array_equal(idx, dense_top(final, len(g)))
    pos = np.argsort(idx, axis=1)
    s_of = np.take_along_axis(scores, pos, 1)  # scores by reference index
    np.testing.assert_allclose(s_of[:, 60:70], s_of[:, :10], atol=1e-6)
    assert (idx[:3, 0] == np.arange(70, 73)).all()  # the query's own copy comes first


def test_many_duplicates_leave_rows_empty_without_nan():
    """30 copies of one vector with k1 = 5: copies beyond the first lists are no one's neighbour,
    their V rows are empty, and J falls back to 1 without dividing by zero."""
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(1, 6)))
    g = np.concatenate([np.repeat(base, 30, 0), unit(rng.normal(size=(20, 6)))])
    q = unit(base + 0.01 * rng.normal(size=(3, 6)))
    scores, idx = k_reciprocal(q, g, kp(5, 2, 0.3), 50)
    assert np.isfinite(scores).all()
    final = dense_k_reciprocal(q, g, 5, 2, 0.3)
    np.testing.assert_array_equal(idx, dense_top(final, 50))


def test_bad_arguments(data):
    q, g, _, _ = data
    with pytest.raises(ValueError, match="shapes"):
        k_reciprocal(q, g[:, :5], kp(20, 6, 0.3), 10)
    with pytest.raises(ValueError, match="lambda"):
        k_reciprocal(q, g, kp(20, 6, 1.5), 10)
    with pytest.raises(ValueError, match="k2 >= 1"):
        k_reciprocal(q, g, kp(20, 0, 0.3), 10)
    with pytest.raises(ValueError, match="top_k >= 0"):
        k_reciprocal(q, g, kp(20, 6, 0.3), -1)
