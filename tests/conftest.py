"""Fixtures shared by several test modules."""
import copy
import shutil

import pytest
import torch

from retrieval.config import ModelParams
from retrieval.model.network import build_model

# The tiny pipeline the slow tests run (a few 48 px demo images, an untrained 16-d model on no
# pretrained weights, a few steps); each module merges in what it varies (seeds, sizes, epochs).
# It spells out the plain setup its tests were worked out on, where params.yaml's defaults differ:
# ArcFace, no WiSE-FT mixes, lr 1e-3 with BatchNorm statistics trained, one TTA scale, no whitening
# (params.yaml's 512 dims exceed its 16).
TINY = {
    "data": {"root": "data"},
    "demo": {"seed": 3, "n_train_classes": 6, "n_test_classes": 3, "train_per_class": 4,
             "queries_per_class": 2, "photos_per_ref_class": 1, "size": 48},
    "cv": {"n_folds": 2, "folds": [0, 1]},
    "model": {"pretrained": "none", "embedding_dim": 16, "head": "arcface"},
    "train": {"epochs": 1, "image_size": 48, "val_image_size": 48, "batch_size": 8,
              "num_workers": 0, "freeze_stages": 0, "warmup_epochs": 0.5, "wise_alphas": [],
              # an untrained model learns from scratch: the full rate, its BatchNorm statistics trained
              "lr": 1e-3, "freeze_bn": False,
              "lr_backoff": 0.0, "backoff_freeze_bn": False},  # tests of the backoff turn them on
    "extract": {"image_size": 48, "batch_size": 16, "num_workers": 0, "flip_tta": True,
                "scales": [1.0], "whiten_dim": 0},
    "rerank": {"k": 50, "dba": {"k": 1}, "qe": {"k": 1}},
    "ensemble": {"k": 1000},
}


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, section by section (nested dicts merged, other values replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@pytest.fixture(scope="session")
def tiny_params():
    """``tiny_params(over)``: the tiny pipeline params (:data:`TINY`) with ``over`` merged in;
    ``tiny_params(over, base)``: ``base`` (other params) with ``over`` merged in. A fresh copy each call."""
    return lambda over=None, base=None: merged(copy.deepcopy(TINY if base is None else base), over or {})


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained 8-d embedding model (random weights, seeded) in eval mode, and its meta."""
    torch.manual_seed(0)
    m, meta = build_model(ModelParams(embedding_dim=8), pretrained="none")
    return m.eval(), meta


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """A scratch folder for one module's shared fixtures, removed after the module when none of
    its tests failed (what ``tmp_path_retention_policy = "failed"`` does for each ``tmp_path``)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)
