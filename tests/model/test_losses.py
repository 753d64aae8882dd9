"""The margin heads against a hand-computed softmax cross-entropy on fixed weights.

For unit embeddings x and unit class centres w_j, cos_j = x . w_j; the target's logit is
s cos(theta_y + m) for ArcFace (m in radians), s (cos_y - m) for CosFace; every other class's
is s cos_j. Sub-center ArcFace takes, for each class, the best of its centres first. The loss
is the batch mean of -log softmax(logits)[y].
"""
import math

import numpy as np
import pytest
import torch

from retrieval.config import ModelParams, TrainParams
from retrieval.model.losses import MetricLoss, PairLoss, margin_loss, metric_loss

N_CLASSES, DIM, SUB = 4, 6, 3


def _unit(a: np.ndarray, axis: int) -> np.ndarray:
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(labels)), labels].mean())


def _expected(cos: np.ndarray, labels: np.ndarray, head: str, margin: float, scale: float) -> float:
    """The loss worked by hand from each class's cosine (``cos``: [batch, classes])."""
    logits = cos.copy()
    rows, target = np.arange(len(labels)), cos[np.arange(len(labels)), labels]
    if head == "cosface":
        logits[rows, labels] = target - margin
    else:
        logits[rows, labels] = np.cos(np.arccos(np.clip(target, -1, 1)) + margin)
    return _cross_entropy(scale * logits, labels)


def _fixed(loss: torch.nn.Module, centres: int, seed: int = 0):
    """Seeded embeddings, labels and centres: the centres copied into the loss's weights."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, DIM))
    labels = np.array([0, 1, 2, 3, 1])
    w = rng.normal(size=(DIM, centres))
    with torch.no_grad():
        loss.W.copy_(torch.from_numpy(w))
    return x, labels, _unit(w, 0), loss(torch.from_numpy(x).float(), torch.from_numpy(labels)).item()


@pytest.mark.parametrize("head, margin", [("arcface", 0.3), ("arcface", 0.5), ("cosface", 0.2)])
def test_margin_head_equals_hand_computed_loss(head, margin):
    loss = margin_loss(head, N_CLASSES, DIM, margin=margin, scale=30.0)
    x, labels, w, got = _fixed(loss, N_CLASSES)
    cos = _unit(x, 1) @ w
    assert got == pytest.approx(_expected(cos, labels, head, margin, 30.0), rel=1e-4)


def test_subcenter_arcface_takes_each_class_best_centre_then_the_margin():
    loss = margin_loss("subcenter_arcface", N_CLASSES, DIM, margin=0.3, scale=30.0, sub_centers=SUB)
    x, labels, w, got = _fixed(loss, N_CLASSES * SUB, seed=1)
    cos = (_unit(x, 1) @ w).reshape(len(x), N_CLASSES, SUB).max(axis=2)
    assert got == pytest.approx(_expected(cos, labels, "arcface", 0.3, 30.0), rel=1e-4)


def test_arcface_margin_is_in_radians():
    """0.3 rad is 17.2 degrees: a head that took it as 0.3 degrees would give a much smaller loss."""
    loss = margin_loss("arcface", N_CLASSES, DIM, margin=0.3, scale=30.0)
    x, labels, w, got = _fixed(loss, N_CLASSES)
    cos = _unit(x, 1) @ w
    tiny = _expected(cos, labels, "arcface", math.radians(0.3), 30.0)
    assert got > tiny + 1.0


# -- pair losses and their sum with the head -----------------------------------------------------

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
    with pytest.raises(ValueError, match="a margin head, a pair loss, or both"):
        MetricLoss(None, None, 1.0)
    only_pair = metric_loss(ModelParams(head="none", embedding_dim=16),
                            TrainParams(pair_loss="triplet"), n_classes=4)
    assert only_pair.head is None and list(only_pair.parameters()) == []
    e2 = e.clone().requires_grad_(True)
    only_pair(e2, y).backward()
    assert torch.isfinite(e2.grad).all()


def test_subcenter_arcface_needs_its_centres_per_class():
    with pytest.raises(ValueError, match=r"subcenter_arcface needs sub_centers \(model.sub_centers\)"):
        margin_loss("subcenter_arcface", N_CLASSES, DIM, margin=0.3, scale=30.0)
    with pytest.raises(ValueError, match="unknown head 'softmax'"):
        margin_loss("softmax", N_CLASSES, DIM, margin=0.3, scale=30.0)
    assert margin_loss("none", N_CLASSES, DIM, margin=0.3, scale=30.0) is None


def test_metric_loss_takes_the_params_sections():
    mp = ModelParams(head="subcenter_arcface", embedding_dim=16, sub_centers=2, margin=0.25, scale=20.0)
    loss = metric_loss(mp, TrainParams(pair_loss="triplet", pair_loss_weight=0.7), n_classes=4)
    assert loss.head.W.shape == (16, 4 * 2) and loss.pair_weight == 0.7
    assert loss.head.scale == 20.0 and loss.head.margin == pytest.approx(0.25)  # PML keeps radians inside
