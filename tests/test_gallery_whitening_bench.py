"""bench/gallery_whitening.py: embeddings recovered from their whitening, then whitened anew."""
import numpy as np
import pytest

from bench.gallery_whitening import rewhiten, unwhiten
from retrieval.embed.feature_file import Features
from retrieval.vectors import l2_normalise
from retrieval.embed.whitening import apply_whitening, fit_pca_whitening


def unit_rows(n, d, seed):
    rng = np.random.default_rng(seed)
    return l2_normalise(rng.normal(size=(n, d)).astype(np.float32) + 0.5)  # a non-zero mean, as real ones


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_unwhiten_recovers_the_unit_norm_embeddings(power):
    train, x = unit_rows(200, 16, 0), unit_rows(30, 16, 1)
    w = fit_pca_whitening(train, 16, power=power)
    back = unwhiten(apply_whitening(x, *w), *w)
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_rewhiten_learns_on_the_given_rows_alone():
    train, gallery = unit_rows(200, 8, 2), unit_rows(50, 8, 3)
    w = fit_pca_whitening(train, 8, power=0.5)
    feats = Features([f"g{i}" for i in range(50)], apply_whitening(gallery, *w), meta={"fold": 0})
    (out,), error = rewhiten([feats], w, 0.5)
    expect = apply_whitening(gallery, *fit_pca_whitening(gallery, 8, power=0.5))
    assert error < 1e-4 and out.meta == {"fold": 0}
    np.testing.assert_allclose(out.embeddings, expect, atol=1e-4)
