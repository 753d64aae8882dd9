"""One fold's extraction: its files against the steps done by hand (embed with the configured TTA,
whiten with a PCA learned on the other folds' images at extract.whiten_power), and the choices
of whitening dimension and member weights."""
import numpy as np
import pytest
from PIL import Image

from retrieval.config import ExtractParams
from retrieval.data.folds import make_folds
from retrieval.data.images import IMAGE, scan_train
from retrieval.embed.extract import _fit_whitening, _weights, extract_fold
from retrieval.embed.tta import embed_tta
from retrieval.embed.whitening import apply_whitening, fit_pca_whitening
from retrieval.model.checkpoints import model_fingerprint

XP = {"image_size": 32, "batch_size": 8, "num_workers": 0, "scales": [1.0], "flip_tta": False, "amp": "off",
      "runtime": "torch", "whiten_dim": 4, "whiten_power": 0.5}


def layout(root) -> None:
    """4 classes of 3 training pictures, 2 queries and 3 references, random pixels (seeded)."""
    rng = np.random.default_rng(0)
    paths = [f"train/c{c}/{i}.png" for c in range(4) for i in range(3)]
    paths += [f"test/query/q{i}.png" for i in range(2)] + [f"test/reference/r{i}.png" for i in range(3)]
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(root / p)


def test_a_folds_features_are_embedded_then_whitened_at_whiten_power(tiny_model, tmp_path):
    model, meta = tiny_model
    layout(tmp_path)
    folds = make_folds(scan_train(tmp_path), 2, 0.45, seed=0)
    feats, whitenings, metrics = extract_fold(ExtractParams(**XP), str(tmp_path), folds, 0, [(model, meta)])

    def embed(images):
        return embed_tta(model, meta, tmp_path, images, 32, [1.0], False, 8, 0, "off", runtime="torch")[0]
    train = folds[folds["fold"] != 0][IMAGE].tolist()  # the classes fold 0's model trained on
    mean, proj = fit_pca_whitening(embed(train), 4, power=0.5)
    [(got_mean, got_proj)] = whitenings
    np.testing.assert_allclose(got_mean, mean, atol=1e-6)
    np.testing.assert_allclose(got_proj, proj, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got_proj, fit_pca_whitening(embed(train), 4, power=1.0)[1], atol=1e-3)
    want = apply_whitening(embed([f"test/query/q{i}.png" for i in range(2)]), mean, proj)
    np.testing.assert_allclose(feats["query"].embeddings, want, atol=1e-5)
    assert feats["reference"].ids.tolist() == ["r0", "r1", "r2"]
    assert feats["valid"].ids.tolist() == folds[folds["fold"] == 0]["id"].tolist()
    m = feats["query"].meta
    assert (m["whiten_dim"], m["whiten_power"], m["member_weights"]) == (4, 0.5, [1.0])
    assert m["model_fingerprint"] == model_fingerprint([(model, meta)])
    assert metrics["images"] == 2 + 3 + len(feats["valid"].ids) and metrics["empty_queries"] == 0


class FakeMember:
    """A member whose embeddings are given: what _fit_whitening asks of one."""
    def __init__(self, emb: np.ndarray):
        self.emb, self.meta, self.tag = emb, {"embedding_dim": emb.shape[1]}, ""

    def embed(self, images, name):
        assert name == "whiten_train"
        return self.emb[:len(images)]


def test_whitening_dimension_is_capped_and_off_at_zero(caplog):
    emb = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    xp = ExtractParams(**{**XP, "whiten_dim": 6})
    (mean, proj), dim = _fit_whitening(xp, 0, ["x"] * 5, FakeMember(emb))
    assert dim == 4 and proj.shape == (8, 4)  # 5 images: a covariance of rank 4 at most
    assert "extract.whiten_dim 6 reduced to 4" in caplog.text
    np.testing.assert_allclose(proj, fit_pca_whitening(emb, 4, power=0.5)[1], rtol=1e-5)
    assert _fit_whitening(ExtractParams(**{**XP, "whiten_dim": 0}), 0, ["x"] * 5, FakeMember(emb)) == (None, 8)
    with pytest.raises(ValueError, match="fold 2: PCA whitening needs at least 2 training-class images, found 1"):
        _fit_whitening(xp, 2, ["x"], FakeMember(emb))


def test_member_weights_given_are_normalised():
    assert _weights(ExtractParams(**XP), 0, ["a"], [], None) == ([1.0], "single backbone", [])
    xp = ExtractParams(**{**XP, "member_weights": [1.0, 3.0]})
    assert _weights(xp, 0, ["a", "b"], [], None) == ([0.25, 0.75], "extract.member_weights", [])
