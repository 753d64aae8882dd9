"""Unit vectors for the re-ranking tests: queries and references around class centres."""
import numpy as np


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n_q, n_g, dim, n_classes, spread, seed=0, scale=1.0):
    """``n_q`` queries and ``n_g`` references around ``n_classes`` random unit centres, each a
    centre plus ``spread`` x N(0, 1/dim) noise x ``scale``, normalised; and their labels."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_classes, dim)))
    ql, gl = rng.integers(0, n_classes, n_q), rng.integers(0, n_classes, n_g)
    q = unit(centres[ql] + spread * rng.normal(size=(n_q, dim)) / np.sqrt(dim) * scale)
    g = unit(centres[gl] + spread * rng.normal(size=(n_g, dim)) / np.sqrt(dim) * scale)
    return q, g, ql, gl
