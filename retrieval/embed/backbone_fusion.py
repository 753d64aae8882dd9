"""Fusing several backbones' embeddings of the same images: weighted concatenation.

Each backbone's block of an embedding is L2-normalised; the fused vector is the concatenation
of ``sqrt(w_m) * block_m`` with the weights summing to 1, so it is unit length again and the
cosine of two fused vectors is the weighted mean of the backbones' cosines,
``sum_m w_m cos_m``. One backbone with weight 1 gives its embedding unchanged. The weights are
given, or chosen on the fold's validation images (:func:`choose_member_weights`).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from retrieval.metrics import MAP, P1
from retrieval.validation_metrics import validation_map
from retrieval.vectors import l2_normalise


def normalise_weights(weights: Sequence[float], n: int) -> np.ndarray:
    """``weights`` as float64 summing to 1; one per block, non-negative, not all zero."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {n} non-negative weights, not all zero; got {list(weights)}")
    return w / w.sum()


def concat_weighted(blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted concatenation of per-backbone embeddings ``blocks`` ([N, D_m] each), float32.

    A zero row of a block (an image that could not be embedded) stays zero in that block.
    """
    w = normalise_weights(weights, len(blocks))
    if len({len(b) for b in blocks}) != 1:
        raise ValueError(f"blocks have different numbers of rows: {[len(b) for b in blocks]}")
    return np.concatenate([l2_normalise(b) * np.float32(np.sqrt(wm)) for b, wm in zip(blocks, w)], axis=1)


def weight_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` entries that are multiples of ``step`` and sum to 1, ordered
    from the most even to the least (so that ties between scores go to the even weights)."""
    units = int(round(1.0 / step))
    if units < 1 or abs(units * step - 1.0) > 1e-9:
        raise ValueError(f"step {step} must divide 1 (e.g. 0.1, 0.25, 0.5)")
    combos = [c for c in itertools.product(range(units + 1), repeat=n) if sum(c) == units]
    combos.sort(key=lambda c: (float(np.var(c)), tuple(-x for x in c)))
    return [tuple(x / units for x in c) for c in combos]


def choose_member_weights(blocks: list[np.ndarray], roles: np.ndarray, labels: np.ndarray, step: float
                          ) -> tuple[list[float], list[dict]]:
    """The weights of :func:`weight_grid` whose fusion of the validation ``blocks`` scores the
    best cosine mAP@1000 (ties: the most even weights), and every candidate's score."""
    table = []
    for w in weight_grid(len(blocks), step):
        m = validation_map(concat_weighted(blocks, w), roles, labels)
        table.append({"weights": list(w), MAP: m[MAP], P1: m[P1]})
    best = max(range(len(table)), key=lambda i: (table[i][MAP], -i))
    return table[best]["weights"], table
