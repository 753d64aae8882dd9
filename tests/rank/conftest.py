"""Fixtures shared by the ranking tests."""
import numpy as np
import pytest

from rank_vectors import unit


@pytest.fixture
def data():
    """30 random unit queries and 50 random unit references in 8 dimensions."""
    rng = np.random.default_rng(0)
    return unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(50, 8)))
