"""Exact search (blocked products) and faiss's indexes against naive numpy versions and golden cases."""
import faiss
import numpy as np
import pytest

from retrieval.config import IndexParams, parse_params
from retrieval.io import InputError
from retrieval.rank.knn import build_index, exact_knn, knn, search_index

from rank_vectors import unit


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


# -- faiss indexes ---------------------------------------------------------------------------

def _clustered_unit(n, d, n_clusters, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_index_recalls_the_exact_neighbours(kind):
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
    db, q = _clustered_unit(300, 16, 5, seed=2), _clustered_unit(20, 16, 5, seed=3)
    for a, b in zip(knn(q, db, 10), knn(q, db, 10, IndexParams())):
        np.testing.assert_array_equal(a, b)


def test_index_params_refused_where_they_cannot_work():
    with pytest.raises(InputError, match="rerank.index.kind hnsw works with dba and qe only; diffusion"):
        parse_params({"rerank": {"index": {"kind": "hnsw"}}})  # the default steps end in diffusion
    assert parse_params({"rerank": {"steps": ["dba", "qe"], "index": {"kind": "ivfpq"}}}).rerank.index.kind == "ivfpq"
    with pytest.raises(ValueError, match="pq_m 7 must divide the embedding dimension 16"):
        build_index(np.ones((100, 16), np.float32), IndexParams(kind="ivfpq", pq_m=7))


def test_search_index_orders_as_knn_and_caps_k():
    db, q = _clustered_unit(200, 16, 5, seed=4), _clustered_unit(15, 16, 5, seed=5)
    db[7] = db[3]  # a tie: the lower index first
    index = build_index(db)
    for a, b in zip(search_index(index, q, 9), knn(q, db, 9)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert (search_index(index, db[3:4], 2)[1] == [[3, 7]]).all()
    assert search_index(index, q, 500)[1].shape == (15, 200)  # k beyond the index: all of it
    empty_s, empty_i = search_index(index, q[:0], 5)
    assert empty_s.shape == empty_i.shape == (0, 5)


def test_search_index_pads_missing_results_last():
    # an IVF index probing one list of several: fewer than k results, padded with -1 and -inf
    db = _clustered_unit(2000, 16, 20, seed=6)
    index = build_index(db, IndexParams(kind="ivfpq", pq_m=4, nlist=40, nprobe=1))
    s, i = search_index(index, db[:20], 200)
    assert (i == -1).any()
    assert ((i == -1) == np.isneginf(s)).all()
    found = i >= 0
    assert all(found[r, :found[r].sum()].all() for r in range(len(i)))  # padding only at the end
