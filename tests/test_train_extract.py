"""Extraction (flip TTA) and feature files, end to end."""

import numpy as np
import pytest
from PIL import Image

from retrieval.embed.feature_file import Features, load_features, save_features
from retrieval.embed.tta import embed_images
from retrieval.io import InputError


def test_flip_tta_makes_embeddings_mirror_invariant(tiny_model, tmp_path):
    m, meta = tiny_model
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img[:, ::-1]).save(tmp_path / "b.png")
    run = {"batch_size": 64, "num_workers": 0, "amp": "off", "channels_last": True}
    plain, _ = embed_images(m, meta, tmp_path, ["a.png", "b.png"], 40, flip_tta=False, **run)
    tta, _ = embed_images(m, meta, tmp_path, ["a.png", "b.png"], 40, flip_tta=True, **run)
    assert not np.allclose(plain[0], plain[1], atol=1e-3)  # the model itself is not mirror-invariant
    np.testing.assert_allclose(tta[0], tta[1], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tta, axis=1), 1.0, atol=1e-5)
    assert tta.dtype == np.float32


def test_feature_file_round_trip_and_id_check(tmp_path):
    f = Features(["b", "a"], np.eye(2), labels=["x", "y"], roles=["query", "reference"],
                 meta={"fold": 1, "model_fingerprint": "m"})
    save_features(tmp_path / "f.npz", f)
    g = load_features(tmp_path / "f.npz", expect_ids=["b", "a"])
    assert g.ids.tolist() == ["b", "a"] and g.meta["fold"] == 1 and g.labels.tolist() == ["x", "y"]
    np.testing.assert_array_equal(g.embeddings, np.eye(2, dtype=np.float32))
    with pytest.raises(InputError, match="do not line up"):
        load_features(tmp_path / "f.npz", expect_ids=["a", "b"])
    with pytest.raises(ValueError, match="not unique"):
        Features(["a", "a"], np.eye(2))
