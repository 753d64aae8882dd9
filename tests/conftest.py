"""Fixtures shared by several test modules."""
import pytest
import torch

from retrieval.config import ModelParams
from retrieval.model import build_model


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained 8-d embedding model (random weights, seeded) in eval mode, and its meta."""
    torch.manual_seed(0)
    m, meta = build_model(ModelParams(embedding_dim=8), pretrained="none")
    return m.eval(), meta
