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

from retrieval.model.losses import margin_loss

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
