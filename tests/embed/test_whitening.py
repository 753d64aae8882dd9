"""PCA whitening: fitted on hand-worked sets (golden projections, part-way whitening), unit
covariance and fixed signs on a random set, its dimension capped by the sample's rank, and the
whitening file's round trip and refusals."""
import numpy as np
import pytest

from retrieval.embed.whitening import apply_whitening, fit_pca_whitening, load_whitening, save_whitening, whitening_dim
from retrieval.io import InputError


def test_whitening_golden():
    # points (+-2, 0), (0, +-1) around (1, 1): mean (1, 1); covariance (n - 1 = 3)
    # diag(8/3, 2/3); components x then y; scales 1/sqrt(8/3) and 1/sqrt(2/3)
    x = np.array([[3, 1], [-1, 1], [1, 2], [1, 0]], dtype=np.float64)
    mean, proj = fit_pca_whitening(x, 2, shrink=0.0, power=1.0)
    np.testing.assert_allclose(mean, [1, 1])
    np.testing.assert_allclose(proj, [[1 / np.sqrt(8 / 3), 0], [0, 1 / np.sqrt(2 / 3)]], rtol=1e-6, atol=1e-7)
    mean1, proj1 = fit_pca_whitening(x, 1, shrink=0.0, power=1.0)  # the top component alone
    np.testing.assert_allclose(proj1, [[1 / np.sqrt(8 / 3)], [0]], rtol=1e-6, atol=1e-7)
    # (3, 1) -> (2, 0) centred -> (1.2247, 0) projected -> (1, 0) normalised
    np.testing.assert_allclose(apply_whitening(x[:1], mean, proj), [[1, 0]], atol=1e-6)


def test_whitening_power_half_takes_each_deviation_to_its_square_root():
    # the golden set above: variances 8/3 and 2/3, so power 0.5 scales by (8/3) ** -1/4 and
    # (2/3) ** -1/4, and the projected standard deviations become (8/3) ** 1/4 and (2/3) ** 1/4
    x = np.array([[3, 1], [-1, 1], [1, 2], [1, 0]], dtype=np.float64)
    _, proj = fit_pca_whitening(x, 2, shrink=0.0, power=0.5)
    np.testing.assert_allclose(proj, [[(8 / 3) ** -0.25, 0], [0, (2 / 3) ** -0.25]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.std((x - x.mean(0)) @ proj, axis=0, ddof=1), [(8 / 3) ** 0.25, (2 / 3) ** 0.25], rtol=1e-6)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="power"):
            fit_pca_whitening(x, 2, power=bad)


def test_whitening_gives_unit_covariance_and_fixes_signs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 5.0
    mean, proj = fit_pca_whitening(x, 4, shrink=0.0, power=1.0)
    y = (x - mean) @ proj
    np.testing.assert_allclose(np.cov(y.T), np.eye(4), atol=1e-4)
    assert np.all(proj[np.abs(proj).argmax(axis=0), np.arange(4)] > 0)  # signs fixed
    mean2, proj2 = fit_pca_whitening(-x, 4, shrink=0.0, power=1.0)  # a reflected set: same directions
    np.testing.assert_allclose(np.abs(proj2), np.abs(proj), rtol=1e-4, atol=1e-6)


def test_whitening_shrink_bounds_tiny_directions_and_bad_input():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])  # no variance in y at all
    _, proj = fit_pca_whitening(x, 2, shrink=1e-3, power=1.0)
    assert np.isfinite(proj).all()
    # x: mean 2/3, squared deviations 1/9 + 25/9 + 16/9 = 42/9, over n - 1 = 2: lambda_max = 7/3;
    # the empty direction gets 1 / sqrt(0 + 1e-3 * 7/3) instead of infinity
    assert np.abs(proj[:, 1]).max() == pytest.approx(1 / np.sqrt(1e-3 * 7 / 3), rel=1e-5)
    with pytest.raises(ValueError, match="dim 3"):
        fit_pca_whitening(x, 3, power=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        fit_pca_whitening(x[:1], 1, power=1.0)


def test_whitening_dim_is_capped_by_the_sample_rank():
    assert whitening_dim(256, 1839, 512) == 256
    assert whitening_dim(256, 80, 512) == 79  # 80 centred vectors span at most 79 directions
    assert whitening_dim(600, 5000, 512) == 512
    assert whitening_dim(8, 2, 16) == 1


def test_whitening_file_round_trip(tmp_path):
    mean, proj = np.arange(3, dtype=np.float32), np.ones((3, 2), np.float32)
    save_whitening(tmp_path / "w.npz", [(mean, proj)], {"fold": 1})
    [(m, p)] = load_whitening(tmp_path / "w.npz")
    np.testing.assert_array_equal(m, mean)
    np.testing.assert_array_equal(p, proj)
    save_whitening(tmp_path / "none.npz", [None], {"fold": 1})
    assert load_whitening(tmp_path / "none.npz") == [None]
    # several backbones: one entry each, in order, 'none' kept per backbone
    save_whitening(tmp_path / "two.npz", [(mean, proj), None, (mean[:2], proj[:2, :1])], {"fold": 1})
    two = load_whitening(tmp_path / "two.npz")
    assert two[1] is None and two[2][1].shape == (2, 1)
    np.testing.assert_array_equal(two[0][1], proj)
    with pytest.raises(InputError, match="no whitening file"):
        load_whitening(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(InputError, match="bad.npz: not a whitening file"):
        load_whitening(tmp_path / "bad.npz")
