"""L2 normalisation of rows: unit rows, zero rows kept, float32 out."""
import numpy as np

from retrieval.vectors import l2_normalise


def test_rows_golden_zero_row_and_dtype():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    out = l2_normalise(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], rtol=1e-7)
    assert np.isfinite(out).all()  # the zero row stays zero, no 0/0


def test_unit_norms_and_directions_kept_against_a_float64_loop():
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32) * 7.0
    out = l2_normalise(x)
    for row, got in zip(x.astype(np.float64), out):
        np.testing.assert_allclose(got, row / np.sqrt((row ** 2).sum()), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
