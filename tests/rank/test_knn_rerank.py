"""Exact search (blocked products, faiss), alpha-QE, DBA and rank fusion against naive numpy versions and golden cases."""
import faiss
import numpy as np
import pytest

from retrieval.config import QEParams, RerankParams
from retrieval.metrics import retrieval_metrics
from retrieval.rank.expansion import alpha_qe, dba, expand
from retrieval.rank.fold_fusion import fuse_rankings
from retrieval.rank.knn import exact_knn, knn
from retrieval.rank.rerank import rank


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(50, 8)))


def naive_knn(q, d, k):
    s = q @ d.T
    idx = np.array([sorted(range(len(d)), key=lambda j: (-s[i, j], j))[:k] for i in range(len(q))])
    return np.take_along_axis(s, idx, 1), idx


def test_knn_matches_naive(data):
    q, d = data
    s, i = knn(q, d, 7)
    ns, ni = naive_knn(q, d, 7)
    np.testing.assert_array_equal(i, ni)
    np.testing.assert_allclose(s, ns, atol=1e-5)


def test_knn_k_larger_than_database_and_shape_check(data):
    q, d = data
    assert knn(q, d[:3], 10)[1].shape == (30, 3)
    with pytest.raises(ValueError, match="shapes"):
        knn(q, d[:, :4], 2)


def test_knn_ties_keep_lower_index():
    d = unit(np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32))
    _, i = knn(d[:1], d, 3)
    assert i.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("threads,block_bytes", [(1, 1 << 30), (2, 4 * 50 * 7), (3, 4 * 50)])
def test_exact_knn_in_blocks_and_threads_matches_naive(data, threads, block_bytes):
    # one block; blocks of 7 queries (the last one short); one query a block, more threads than rows
    q, d = data
    s, i = exact_knn(q, d, 9, threads=threads, block_bytes=block_bytes)
    ns, ni = naive_knn(q, d, 9)
    np.testing.assert_array_equal(i, ni)
    np.testing.assert_allclose(s, ns, atol=1e-6)


def test_exact_knn_tie_at_the_kth_place_takes_the_lower_index():
    d = np.array([[0.5, 0], [1, 0], [0.5, 0], [0.5, 0], [0, 1]], np.float32)  # scores 0.5, 1, 0.5, 0.5, 0
    s, i = exact_knn(np.array([[1, 0]], np.float32), d, 3, block_bytes=4)
    assert i.tolist() == [[1, 0, 2]] and s.tolist() == [[1.0, 0.5, 0.5]]


def test_exact_knn_agrees_with_faiss_flat_index():
    rng = np.random.default_rng(3)
    q, d = unit(rng.normal(size=(40, 32))), unit(rng.normal(size=(3000, 32)))
    index = faiss.IndexFlatIP(32)
    index.add(d)
    fs, fi = index.search(q, 1000)
    s, i = exact_knn(q, d, 1000, threads=2)
    np.testing.assert_allclose(s, fs, atol=1e-5)
    assert (i == fi).mean() > 0.99  # float sums in another order may swap near-equal scores


@pytest.mark.parametrize("k", [0, 51])
def test_exact_knn_refuses_k_outside_the_database(data, k):
    q, d = data  # 50 references
    with pytest.raises(ValueError, match="k must be in 1..50"):
        exact_knn(q, d, k)


def test_exact_knn_refuses_non_finite_input(data):
    q, d = data
    q = q.copy()
    q[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        exact_knn(q, d, 5)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_exact_knn_refuses_products_that_overflow_into_nan():
    # finite rows whose products overflow float32: +inf + -inf in a sum is NaN, refused
    q = np.array([[3e19, 3e19]], np.float32)
    d = np.array([[3e19, -3e19], [1.0, 0.0], [0.0, 1.0]], np.float32)
    with pytest.raises(ValueError, match="NaN"):  # the product's warnings come from a worker thread
        exact_knn(q, d, 2)


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


def map_of(q, db, labels, p, steps):
    return retrieval_metrics(rank(q, db, p, len(db), steps)[1], np.array(["A"]), labels)["map@1000"]


def test_qe_must_help_when_the_top_match_is_easy_and_the_rest_hard():
    """Query q: sim 0.90 to a0, ~0.50 to the other A references, ~0.69 to three B distractors.

    Before: a0, b, b, b, a, a, a -> AP = (1/1 + 2/5 + 3/6 + 4/7) / 4 = 0.6179.
    a0 lies near the other A references (sim 0.8), so q' = q + 0.9 * a0 moves towards them:
    their similarity rises to ~0.66 while the distractors fall to ~0.5, and AP becomes 1.
    """
    q = unit(np.array([[0.9, 0.236, -0.367]]))
    a = [[1, 0, 0], [0.8, 0.0, 0.6], [0.8, 0.05, 0.6], [0.8, -0.05, 0.6]]
    b = [[0.3, 0.5, -0.85], [0.3, 0.55, -0.8], [0.35, 0.5, -0.8]]
    db, labels = unit(np.array(a + b, float)), np.array(list("AAAABBB"))
    p = RerankParams(qe=QEParams(k=1, alpha=1.0))
    before, after = map_of(q, db, labels, p, []), map_of(q, db, labels, p, ["qe"])
    assert before == pytest.approx((1 + 2 / 5 + 3 / 6 + 4 / 7) / 4)
    assert after == pytest.approx(1.0)


def test_dba_must_help_an_outlying_reference_with_a_typical_neighbour():
    """q = e1. a0 (sim 0.90) is typical; a1 (sim 0.50) is an outlier of class A whose nearest
    reference is a0 (0.83); the distractor b sits at 0.60 with only weak neighbours (<= 0.32).

    Before: a0, b, a1 -> AP = (1 + 2/3) / 2 = 0.8333. DBA (k=1, alpha=3) gives a1 a weight
    0.83^3 = 0.57 of a0, lifting it to ~0.67, while b gains only 0.32^3 = 0.03 of a0 (~0.62).
    """
    q = unit(np.array([[1.0, 0.0, 0.0]]))
    db = unit(np.array([[0.9, 0.436, 0.0], [0.5, 0.866, 0.0], [0.6, -0.5, 0.624]]))
    labels = np.array(list("AAB"))
    p = RerankParams(dba=QEParams(k=1, alpha=3.0))
    before, after = map_of(q, db, labels, p, []), map_of(q, db, labels, p, ["dba"])
    assert before == pytest.approx((1 + 2 / 3) / 2)
    assert after == pytest.approx(1.0)


def test_steps_run_in_the_declared_order(data):
    q, d = data
    p = RerankParams(dba=QEParams(k=3, alpha=1.0), qe=QEParams(k=2, alpha=1.0))
    s, i = rank(q, d, p, 5, ["dba", "qe"])
    d2 = dba(d, 3, 1.0)
    s2, i2 = knn(alpha_qe(q, d2, 2, 1.0), d2, 5)
    np.testing.assert_array_equal(i, i2)
    _, i3 = rank(q, d, p, 5, ["qe", "dba"])  # QE against the raw database, then DBA
    d3 = dba(d, 3, 1.0)
    np.testing.assert_array_equal(i3, knn(alpha_qe(q, d, 2, 1.0), d3, 5)[1])
    np.testing.assert_array_equal(rank(q, d, p, 5, [])[1], knn(q, d, 5)[1])


def naive_fuse(scores, indices, n_refs, k, weights):
    q = len(scores[0])
    fused = np.zeros((q, n_refs))
    for w, s, i in zip(weights, scores, indices):
        for r in range(q):
            row = np.full(n_refs, s[r][i[r] >= 0].min())  # missing -> the list's floor
            row[i[r][i[r] >= 0]] = s[r][i[r] >= 0]
            fused[r] += w * row
    seen = np.zeros((q, n_refs), bool)
    for i in indices:
        for r in range(q):
            seen[r, i[r][i[r] >= 0]] = True
    out = []
    for r in range(q):
        cand = np.flatnonzero(seen[r])
        out.append(sorted(cand, key=lambda c: (-fused[r, c], c))[:k])
    return out


def test_fuse_matches_naive_dense():
    rng = np.random.default_rng(3)
    n_q, n_refs, k_list = 6, 40, 8
    scores, indices = [], []
    for _ in range(3):
        s = rng.normal(size=(n_q, n_refs)).astype(np.float32)
        i = np.argsort(-s, axis=1)[:, :k_list]
        scores.append(np.take_along_axis(s, i, 1)); indices.append(i)
    indices[2][0, -2:] = -1  # a short list
    weights = [1.0, 0.5, 2.0]
    _, fused = fuse_rankings(scores, indices, n_refs, 10, weights)
    for r, expected in enumerate(naive_fuse(scores, indices, n_refs, 10, weights)):
        got = fused[r][fused[r] >= 0].tolist()
        assert got == list(expected)


def test_fuse_golden_and_padding():
    # model 1 ranks r0 (0.9), r1 (0.5); model 2 ranks r2 (0.8), r1 (0.7)
    # shifted by floors 0.5 and 0.7: r0 0.4, r1 0 + 0 = 0, r2 0.1 -> r0, r2, r1
    s = [np.array([[0.9, 0.5]]), np.array([[0.8, 0.7]])]
    i = [np.array([[0, 1]]), np.array([[2, 1]])]
    fs, fi = fuse_rankings(s, i, n_refs=5, k=4)
    assert fi.tolist() == [[0, 2, 1, -1]]
    np.testing.assert_allclose(fs[0, :3], [0.4, 0.1, 0.0], atol=1e-6)
    assert fs[0, 3] == -np.inf


# -- approximate indexes ---------------------------------------------------------------------

def _clustered_unit(n, d, n_clusters, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_index_recalls_the_exact_neighbours(kind):
    from retrieval.config import IndexParams
    db = _clustered_unit(4000, 32, 40, seed=0)
    q = _clustered_unit(200, 32, 40, seed=1)
    p = IndexParams(kind=kind, pq_m=8, nprobe=16)
    _, exact = knn(q, db, 20)
    s, approx = knn(q, db, 20, p)
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])
    assert recall > 0.6, recall  # approximate, but finding most of the true neighbours
    found = approx >= 0
    assert np.all(np.diff(np.where(found, s, -np.inf), axis=1) <= 1e-6)  # best first
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in approx)  # no repeats


def test_exact_index_params_equal_plain_knn():
    from retrieval.config import IndexParams
    db, q = _clustered_unit(300, 16, 5, seed=2), _clustered_unit(20, 16, 5, seed=3)
    for a, b in zip(knn(q, db, 10), knn(q, db, 10, IndexParams())):
        np.testing.assert_array_equal(a, b)


def test_missing_neighbours_weigh_nothing_in_expansion():
    # an approximate list may end in -1 padding: expand must ignore it even for alpha 0
    db = np.eye(3, dtype=np.float32)
    v = np.array([[1.0, 0.0, 0.0]], np.float32)
    out = expand(v, db, np.array([[0.5, -np.inf]], np.float32), np.array([[1, -1]]), alpha=0.0)
    np.testing.assert_allclose(out, [[1 / np.sqrt(2), 1 / np.sqrt(2), 0.0]], atol=1e-6)


def test_index_params_refused_where_they_cannot_work():
    from retrieval.config import IndexParams, parse_params
    from retrieval.io import InputError
    from retrieval.rank.knn import build_index
    with pytest.raises(InputError, match="rerank.index.kind hnsw works with dba and qe only; diffusion"):
        parse_params({"rerank": {"index": {"kind": "hnsw"}}})  # the default steps end in diffusion
    assert parse_params({"rerank": {"steps": ["dba", "qe"], "index": {"kind": "ivfpq"}}}).rerank.index.kind == "ivfpq"
    with pytest.raises(ValueError, match="pq_m 7 must divide the embedding dimension 16"):
        build_index(np.ones((100, 16), np.float32), IndexParams(kind="ivfpq", pq_m=7))
