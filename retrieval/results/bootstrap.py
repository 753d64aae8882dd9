"""How sure is a mean AP, and is A better than B? Bootstrap over queries or classes, in numpy.

* A bootstrap resample draws n of the n queries with replacement; resample r is the r-th call
  ``rng.integers(0, n, n)`` of one generator ``numpy.random.default_rng(seed)``.
* The 95% interval is the percentile interval: the 2.5th and 97.5th percentiles (numpy's
  default linear interpolation) of the resampled means.
* Paired comparison of two runs scored on the same queries resamples the per-query
  differences A - B, so both runs see the same queries in every resample.
* Class bootstrap: the queries of one class share their references, so their APs move together
  and the query bootstrap's interval is too narrow. A class resample draws G of the G classes
  with replacement and takes every query of each drawn class (a class drawn twice counts twice);
  its mean is over those queries. The R resamples are the rows of one call
  ``rng.integers(0, G, (R, G))``, classes numbered in sorted order. With one query per class this
  is the query bootstrap, draw for draw.
* Half-leaderboard wins: a public leaderboard that scores a random half of the test queries.
  Over ``halves`` random halves (n // 2 queries drawn without replacement; half h is the h-th
  ``rng.permutation(n)[: n // 2]`` of a generator seeded ``seed``), the share in which A's mean
  AP is above B's, a tie counting one half.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from retrieval.metrics import MAP

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The mean of ``values`` in each of ``resamples`` bootstrap resamples, ``[resamples]``."""
    values = _vector(values)
    rng = np.random.default_rng(seed)
    n = len(values)
    return np.array([values[rng.integers(0, n, n)].mean() for _ in range(resamples)])


def class_bootstrap_means(values: np.ndarray, classes: np.ndarray, resamples: int = RESAMPLES,
                          seed: int = SEED) -> np.ndarray:
    """The mean of ``values`` in each of ``resamples`` class resamples (whole classes drawn with
    replacement; ``classes`` labels each value), ``[resamples]``."""
    values = _vector(values)
    classes = np.asarray(classes).ravel()
    if len(classes) != len(values):
        raise ValueError(f"need one class per value, got {len(classes)} classes for {len(values)} values")
    _, codes = np.unique(classes, return_inverse=True)
    sums, counts = np.bincount(codes, weights=values), np.bincount(codes)
    picks = np.random.default_rng(seed).integers(0, len(sums), (resamples, len(sums)))
    return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)


def percentile_interval(means: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of resampled means, ``(low, high)``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                  level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap percentile interval of the mean of ``values`` (e.g. per-query APs)."""
    return percentile_interval(bootstrap_means(values, resamples, seed), level)


def half_wins(a: np.ndarray, b: np.ndarray, halves: int = RESAMPLES, seed: int = SEED) -> float:
    """Share of random halves of the queries on which mean(a) beats mean(b), ties counting 1/2."""
    a, b = _pair(a, b)
    return float(np.mean([_win(a[h].mean(), b[h].mean()) for h in random_halves(len(a), halves, seed)]))


def random_halves(n: int, halves: int = RESAMPLES, seed: int = SEED):
    """Yield ``halves`` index vectors, each n // 2 (at least 1) of ``range(n)`` without replacement."""
    rng = np.random.default_rng(seed)
    for _ in range(halves):
        yield rng.permutation(n)[: max(n // 2, 1)]


def paired_comparison(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                      classes: np.ndarray | None = None) -> dict:
    """Paired bootstrap of per-query scores ``a`` and ``b`` (same queries, same order).

    Returns ``n_queries``, ``mean_a``, ``mean_b``, ``mean_diff`` (a - b), ``diff_ci95`` (the
    95% percentile interval of the resampled mean differences, ``[low, high]``), ``share_diff_positive``
    (share of resamples whose mean difference is > 0) and ``half_wins_a`` (:func:`half_wins`).
    With the queries' ``classes``, also ``n_classes``, ``class_diff_ci95`` and
    ``class_share_diff_positive``: the same over class resamples (:func:`class_bootstrap_means`).
    """
    a, b = _pair(a, b)
    means = bootstrap_means(a - b, resamples, seed)
    result = {"n_queries": len(a), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
              "mean_diff": float((a - b).mean()), "diff_ci95": list(percentile_interval(means)),
              "share_diff_positive": float((means > 0).mean()), "half_wins_a": half_wins(a, b, resamples, seed)}
    if classes is not None:
        class_means = class_bootstrap_means(a - b, classes, resamples, seed)
        result.update(n_classes=len(np.unique(classes)), class_diff_ci95=list(percentile_interval(class_means)),
                      class_share_diff_positive=float((class_means > 0).mean()))
    return result


def cv_uncertainty(ap: np.ndarray, classes: np.ndarray, fold_maps: Mapping[str, float],
                   resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """How far to trust a cross-validated mAP@1000: ``map@1000_ci95_lo`` and ``map@1000_ci95_hi``
    (bootstrap interval over the pooled queries' APs ``ap``), ``map@1000_class_ci95_lo`` and
    ``_hi`` (over their ``classes``: :func:`class_bootstrap_means`), ``fold_map@1000``
    (``fold_maps``, each fold's mAP@1000) and ``fold_map@1000_range`` (its max - min)."""
    low, high = mean_interval(ap, resamples, seed)
    class_low, class_high = percentile_interval(class_bootstrap_means(ap, classes, resamples, seed))
    spread = max(fold_maps.values()) - min(fold_maps.values())
    return {f"{MAP}_ci95_lo": low, f"{MAP}_ci95_hi": high, f"{MAP}_class_ci95_lo": class_low,
            f"{MAP}_class_ci95_hi": class_high, f"fold_{MAP}": dict(fold_maps), f"fold_{MAP}_range": float(spread)}


def _win(mean_a: float, mean_b: float) -> float:
    """1 if A's mean is higher, 0 if lower, 0.5 for a tie."""
    return 0.5 if mean_a == mean_b else float(mean_a > mean_b)


def _vector(values: np.ndarray) -> np.ndarray:
    """``values`` as a non-empty 1-D float64 array."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no values to resample")
    return values


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as float64 vectors of one length."""
    a, b = _vector(a), _vector(b)
    if len(a) != len(b):
        raise ValueError(f"paired scores need one length, got {len(a)} and {len(b)}")
    return a, b
