"""The training and extraction techniques: PCA whitening, multi-scale TTA, P x K batches,
sub-center ArcFace and pair losses, each on numbers worked out by hand or a naive version."""
import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.config import ModelParams, TrainParams
from retrieval.data.loaders import PKSampler
from retrieval.embed.feature_file import l2_normalise
from retrieval.embed.tta import embed_images, embed_tta, tta_sizes
from retrieval.embed.whitening import apply_whitening, fit_pca_whitening, load_whitening, save_whitening, whitening_dim
from retrieval.io import InputError
from retrieval.model.losses import MetricLoss, PairLoss, margin_loss, metric_loss


# -- PCA whitening -----------------------------------------------------------------------------

def test_whitening_golden():
    # points (+-2, 0), (0, +-1) around (1, 1): mean (1, 1); covariance (n - 1 = 3)
    # diag(8/3, 2/3); components x then y; scales 1/sqrt(8/3) and 1/sqrt(2/3)
    x = np.array([[3, 1], [-1, 1], [1, 2], [1, 0]], dtype=np.float64)
    mean, proj = fit_pca_whitening(x, 2, shrink=0.0)
    np.testing.assert_allclose(mean, [1, 1])
    np.testing.assert_allclose(proj, [[1 / np.sqrt(8 / 3), 0], [0, 1 / np.sqrt(2 / 3)]], rtol=1e-6, atol=1e-7)
    mean1, proj1 = fit_pca_whitening(x, 1, shrink=0.0)  # the top component alone
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
    mean, proj = fit_pca_whitening(x, 4, shrink=0.0)
    y = (x - mean) @ proj
    np.testing.assert_allclose(np.cov(y.T), np.eye(4), atol=1e-4)
    assert np.all(proj[np.abs(proj).argmax(axis=0), np.arange(4)] > 0)  # signs fixed
    mean2, proj2 = fit_pca_whitening(-x, 4, shrink=0.0)  # a reflected set: same directions
    np.testing.assert_allclose(np.abs(proj2), np.abs(proj), rtol=1e-4, atol=1e-6)


def test_whitening_shrink_bounds_tiny_directions_and_bad_input():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])  # no variance in y at all
    _, proj = fit_pca_whitening(x, 2, shrink=1e-3)
    assert np.isfinite(proj).all()
    # x: mean 2/3, squared deviations 1/9 + 25/9 + 16/9 = 42/9, over n - 1 = 2: lambda_max = 7/3;
    # the empty direction gets 1 / sqrt(0 + 1e-3 * 7/3) instead of infinity
    assert np.abs(proj[:, 1]).max() == pytest.approx(1 / np.sqrt(1e-3 * 7 / 3), rel=1e-5)
    with pytest.raises(ValueError, match="dim 3"):
        fit_pca_whitening(x, 3)
    with pytest.raises(ValueError, match="at least 2"):
        fit_pca_whitening(x[:1], 1)


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


# -- multi-scale TTA ---------------------------------------------------------------------------

def test_tta_sizes_golden():
    assert tta_sizes(224, [0.75, 1.0, 1.25]) == [168, 224, 280]
    assert tta_sizes(101, [1.0]) == [104]  # 101 / 8 = 12.6 -> 13 x 8
    assert tta_sizes(60, [0.5]) == [32]  # 30 / 8 = 3.75 -> 4 x 8


def test_multiscale_tta_is_normalised_sum_of_scales(tiny_model, tmp_path):
    m, meta = tiny_model
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, size=(50, 60, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    images = [f"{i}.png" for i in range(3)]
    run = {"batch_size": 64, "num_workers": 0, "amp": "off"}
    one, _ = embed_tta(m, meta, tmp_path, images, 48, [1.0], flip_tta=True, **run)
    plain, _ = embed_images(m, meta, tmp_path, images, 48, flip_tta=True, **run)
    np.testing.assert_allclose(one, plain, atol=1e-6)  # one scale: the same (renormalised) embeddings
    two, _ = embed_tta(m, meta, tmp_path, images, 48, [1.0, 1.5], flip_tta=False, **run)
    a, _ = embed_images(m, meta, tmp_path, images, 48, flip_tta=False, **run)
    b, _ = embed_images(m, meta, tmp_path, images, 72, flip_tta=False, **run)
    naive = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    np.testing.assert_allclose(two, naive, atol=1e-6)
    np.testing.assert_array_equal(two, l2_normalise(a + b))  # one decoding per image: the same bits
    assert not np.allclose(two, a, atol=1e-3)  # the second scale did change something


# -- P x K batches -----------------------------------------------------------------------------

def test_pk_sampler_batches_hold_p_classes_of_k_images():
    labels = np.repeat(np.arange(6), [5, 5, 5, 5, 3, 1])  # one class below K: drawn with replacement
    s = PKSampler(labels, m=2, batch_size=6, length=24, seed=0)
    s.set_epoch(1)
    idx = list(iter(s))
    assert len(idx) == len(s) == 24
    for b in range(0, 24, 6):
        batch = labels[idx[b:b + 6]]
        classes, counts = np.unique(batch, return_counts=True)
        assert len(classes) == 3 and (counts == 2).all(), batch


def test_pk_sampler_is_a_function_of_seed_and_epoch():
    labels = np.repeat(np.arange(8), 4)
    s = PKSampler(labels, m=4, batch_size=8, length=32, seed=5)
    s.set_epoch(2)
    first = list(iter(s))
    s.set_epoch(3)
    list(iter(s))
    np.random.seed(123)  # the global numpy state plays no part
    s.set_epoch(2)
    assert list(iter(s)) == first  # not an order left over from epoch 3
    fresh = PKSampler(labels, m=4, batch_size=8, length=32, seed=5)  # as after a resume
    fresh.set_epoch(2)
    assert list(iter(fresh)) == first
    s.set_epoch(4)
    assert list(iter(s)) != first


def test_pk_sampler_refuses_a_batch_it_cannot_fill():
    with pytest.raises(InputError, match="2 classes x train.m_per_class 4 cannot fill a batch of 16"):
        PKSampler(np.repeat([0, 1], 10), m=4, batch_size=16, length=20, seed=0)


# -- heads and pair losses ----------------------------------------------------------------------

def clustered(n_classes=4, per=4, dim=16, spread=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_classes, dim, generator=g), dim=1)
    y = torch.arange(n_classes).repeat_interleave(per)
    e = torch.nn.functional.normalize(centres[y] + spread * torch.randn(len(y), dim, generator=g), dim=1)
    return e, y


def test_subcenter_arcface_margin_bites_and_has_k_centres():
    e, y = clustered()
    with_m = margin_loss("subcenter_arcface", 4, 16, margin=0.3, scale=30.0, sub_centers=3)
    no_m = margin_loss("subcenter_arcface", 4, 16, margin=0.0, scale=30.0, sub_centers=3)
    assert with_m.W.shape == (16, 4 * 3)
    no_m.W.data.copy_(with_m.W.data)
    assert with_m(e, y).item() > no_m(e, y).item()


@pytest.mark.parametrize("kind", ["triplet", "multisimilarity"])
def test_pair_loss_prefers_clustered_embeddings(kind):
    # the same labels on embeddings that cluster by class, and on ones that do not: a pair
    # loss must score the clustered set lower (it is what the loss asks for)
    e, y = clustered(spread=0.05)
    g = torch.Generator().manual_seed(1)
    shuffled = e[torch.randperm(len(e), generator=g)]
    loss = PairLoss(kind)
    assert loss(e, y).item() < loss(shuffled, y).item()
    assert loss(shuffled, y).item() > 0


@pytest.mark.parametrize("kind", ["triplet", "multisimilarity"])
def test_pair_loss_without_positives_is_zero_and_backpropagates(kind):
    e = torch.nn.functional.normalize(torch.randn(5, 8), dim=1).requires_grad_(True)
    loss = PairLoss(kind)(e, torch.arange(5))  # every label once: no positive pair
    assert loss.item() == 0.0
    loss.backward()  # an optimiser step on such a batch must not fail
    assert e.grad is not None and torch.count_nonzero(e.grad) == 0


def test_metric_loss_sums_head_and_weighted_pair():
    e, y = clustered(spread=0.3)
    head, pair = margin_loss("cosface", 4, 16, 0.2, 30.0), PairLoss("multisimilarity")
    total = MetricLoss(head, pair, pair_weight=0.5)(e, y)
    assert total.item() == pytest.approx(head(e, y).item() + 0.5 * pair(e, y).item(), rel=1e-5)
    with pytest.raises(ValueError):
        MetricLoss(None, None)
    only_pair = metric_loss(ModelParams(head="none", embedding_dim=16),
                            TrainParams(pair_loss="triplet"), n_classes=4)
    assert only_pair.head is None and list(only_pair.parameters()) == []
    e2 = e.clone().requires_grad_(True)
    only_pair(e2, y).backward()
    assert torch.isfinite(e2.grad).all()
