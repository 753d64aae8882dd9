"""Fusing several backbones' embeddings: weighted concatenation and the choice of its weights."""
import numpy as np
import pytest

from retrieval.config import parse_params
from retrieval.embed.backbone_fusion import concat_weighted, normalise_weights, weight_grid
from retrieval.embed.extract import choose_member_weights
from retrieval.io import InputError
from retrieval.validation_metrics import validation_map


def test_fused_cosine_is_the_weighted_mean_of_cosines_golden():
    # block A: a = (1, 0), b = (0.6, 0.8): cos 0.6.  block B: a = (0, 1), b = (0, 1): cos 1.0
    a = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])]
    b = [np.array([[0.6, 0.8]]), np.array([[0.0, 2.0]])]  # unnormalised: blocks are normalised first
    for w, expected in [((1, 1), 0.8), ((3, 1), 0.7), ((1, 0), 0.6), ((0.2, 0.8), 0.92)]:
        fa, fb = concat_weighted(a, w), concat_weighted(b, w)
        assert np.linalg.norm(fa) == pytest.approx(1.0)
        assert (fa @ fb.T).item() == pytest.approx(expected)


def test_one_block_of_weight_one_is_the_embedding_itself():
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(concat_weighted([x], [1.0]), x, rtol=0, atol=1e-7)


def test_zero_rows_stay_zero():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 5))
    a[2] = 0.0  # an image one backbone could not embed
    fused = concat_weighted([a, b], [0.5, 0.5])
    assert np.all(fused[2, :3] == 0) and np.linalg.norm(fused[2, 3:]) == pytest.approx(np.sqrt(0.5))


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="need 2 non-negative"):
        normalise_weights([1.0], 2)
    with pytest.raises(ValueError, match="not all zero"):
        normalise_weights([0.0, 0.0], 2)
    with pytest.raises(ValueError, match="different numbers of rows"):
        concat_weighted([np.ones((2, 2)), np.ones((3, 2))], [1, 1])


def test_weight_grid_golden():
    assert weight_grid(2, 0.5) == [(0.5, 0.5), (1.0, 0.0), (0.0, 1.0)]
    g = weight_grid(3, 0.25)
    assert len(g) == 15 and g[0] == (0.5, 0.25, 0.25) and all(sum(w) == pytest.approx(1) for w in g)
    assert len(weight_grid(2, 0.1)) == 11 and weight_grid(1, 0.1) == [(1.0,)]
    with pytest.raises(ValueError, match="must divide 1"):
        weight_grid(2, 0.3)


def _clustered(rng, labels, dim, noise):
    centres = {c: rng.normal(size=dim) for c in set(labels)}
    return np.stack([centres[c] + noise * rng.normal(size=dim) for c in labels]).astype(np.float32)


def test_the_informative_backbone_gets_the_weight():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 6).astype(str)
    roles = np.tile(["query", "query", "reference", "reference", "reference", "reference"], 10)
    good, noise = _clustered(rng, labels, 16, 0.3), rng.normal(size=(60, 16)).astype(np.float32)
    weights, table = choose_member_weights([noise, good], roles, labels, 0.25)
    assert weights[1] >= 0.75 and len(table) == 5
    best = max(t["map@1000"] for t in table)
    assert validation_map(concat_weighted([noise, good], weights), roles, labels)["map@1000"] == best
    assert best > validation_map(concat_weighted([noise, good], [0.5, 0.5]), roles, labels)["map@1000"]
    # two identical backbones: every weight ties; the even weights win the tie
    weights, _ = choose_member_weights([good, good], roles, labels, 0.25)
    assert weights == [0.5, 0.5]


def test_params_for_several_backbones():
    p = parse_params({"model": {"backbone": ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]},
                      "extract": {"member_weights": [2, 1]}})
    assert p.model.backbones == ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
    assert p.model.member("tf_efficientnet_lite1").backbone == "tf_efficientnet_lite1"
    assert parse_params({}).model.backbones == ["tf_efficientnet_lite0"]
    with pytest.raises(InputError, match="member_weights has 1 weights for 2 backbones"):
        parse_params({"model": {"backbone": ["a", "b"]}, "extract": {"member_weights": [1]}})
    with pytest.raises(InputError, match="each once"):
        parse_params({"model": {"backbone": ["a", "a"]}})
    with pytest.raises(InputError, match="member_weights: .*non-negative"):
        parse_params({"extract": {"member_weights": [-1]}})
