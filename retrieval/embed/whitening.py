"""PCA whitening of embeddings (Jégou & Chum, ECCV 2012), learned on training-class images.

Pure functions: :func:`fit_pca_whitening` learns a centring mean and a projection from a
[N, D] matrix, :func:`apply_whitening` centres, projects and L2-normalises. A whitening file
(``.npz``: ``mean_<i>``, ``projection_<i>`` for each backbone i of the fold's model, ``meta``)
carries them from extract to the search command; an empty projection means no whitening.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retrieval.io import UNREADABLE_NPZ, InputError, save_npz
from retrieval.vectors import l2_normalise


def fit_pca_whitening(x: np.ndarray, dim: int, shrink: float = 1e-3, *,
                      power: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and projection [D, dim] that whiten ``x``'s top ``dim`` principal components,
    ``power`` the caller's (``extract.whiten_power``).

    The projection is ``V[:, :dim] * (lambda + shrink * lambda_max) ** (-power / 2)``: the
    eigenvectors of the covariance, largest first, scaled so that with ``power`` 1 each
    projected component has unit variance (up to ``shrink``, which keeps near-zero directions
    from exploding); a ``power`` below 1 whitens part of the way (0.5: each component's
    standard deviation becomes the square root of what it was), so the directions that the
    training classes hardly use are raised less. Each eigenvector's sign is fixed (largest
    |entry| positive), so the result does not depend on the solver.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if not 1 <= dim <= d:
        raise ValueError(f"whitening dim {dim} must be in 1..{d}")
    if n < 2:
        raise ValueError(f"whitening needs at least 2 vectors, got {n}")
    if not 0.0 < power <= 1.0:
        raise ValueError(f"whitening power {power} must be in (0, 1]")
    mean = x.mean(axis=0)
    cov = (x - mean).T @ (x - mean) / (n - 1)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigval)[::-1][:dim]
    eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
    signs = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(dim)])
    eigvec = eigvec * np.where(signs == 0, 1.0, signs)
    proj = eigvec * (eigval + shrink * max(eigval.max(), 1e-12)) ** (-power / 2)
    return mean.astype(np.float32), proj.astype(np.float32)


def whitening_dim(requested: int, n_vectors: int, embedding_dim: int) -> int:
    """The dimension whitening can honestly have: at most ``n_vectors - 1`` (the rank of the
    centred sample covariance) and at most ``embedding_dim``. Beyond the rank, directions have
    no variance to learn from and would only amplify noise."""
    return max(1, min(requested, n_vectors - 1, embedding_dim))


def apply_whitening(x: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``(x - mean) @ projection``, rows L2-normalised (a zero row stays zero), float32."""
    return l2_normalise((np.asarray(x, dtype=np.float32) - mean) @ projection)


def save_whitening(path: str | Path, whitenings: list, meta: dict) -> None:
    """Write a whitening file: one (mean, projection) or None ('no whitening') per backbone."""
    arrays = {}
    for i, w in enumerate(whitenings):
        mean, projection = w if w is not None else (np.zeros(0, np.float32), np.zeros((0, 0), np.float32))
        arrays[f"mean_{i}"], arrays[f"projection_{i}"] = mean, projection
    meta = {**meta, "dims": [int(arrays[f"projection_{i}"].shape[1]) for i in range(len(whitenings))]}
    save_npz(path, **arrays, meta=np.array(json.dumps(meta, sort_keys=True)))


def load_whitening(path: str | Path) -> list:
    """The (mean, projection) of each backbone in a whitening file, None where it says none."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no whitening file (run the extract stage first)")
    out = []
    try:
        with np.load(path, allow_pickle=False) as z:
            n = sum(1 for k in z.files if k.startswith("projection_"))
            if n == 0 or any(f"mean_{i}" not in z.files or f"projection_{i}" not in z.files for i in range(n)):
                raise KeyError("mean_<i> and projection_<i> for each backbone")
            pairs = [(z[f"mean_{i}"], z[f"projection_{i}"]) for i in range(n)]
    except UNREADABLE_NPZ as err:
        raise InputError(f"{path}: not a whitening file ({type(err).__name__}: {err}); re-run the extract stage") from None
    for i, (mean, projection) in enumerate(pairs):
        if projection.size == 0:
            out.append(None)
        elif projection.ndim != 2 or mean.shape != (projection.shape[0],):
            raise InputError(f"{path}: backbone {i}: mean {mean.shape} and projection {projection.shape} do not fit")
        else:
            out.append((mean, projection))
    return out
