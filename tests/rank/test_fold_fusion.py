"""Fusing the folds' ranked lists against a naive dense fusion, and golden cases."""
import numpy as np
import pytest

from retrieval.rank.fold_fusion import fuse_rankings


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


def test_fuse_refuses_mismatched_weights_and_shapes():
    s, i = [np.array([[0.9, 0.5]])] * 2, [np.array([[0, 1]])] * 2
    with pytest.raises(ValueError, match="3 weights for 2 rankings"):
        fuse_rankings(s, i, n_refs=3, k=2, weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="every ranking needs"):
        fuse_rankings([s[0], np.array([[0.9]])], i, n_refs=3, k=2)
