"""A small bundle shared by the bundle tests: a demo set, two folds of ImageNet-initialised
16-d models (one with PCA whitening, fold weights 1 and 2), the pipeline's own (torch) reference
features, and the bundle the bundle stage's library writes from them."""
import shutil
from pathlib import Path

import pytest
import torch

from bundle_helpers import TTA, tiny_bundle_params, torch_embed

from retrieval.config import DemoParams, ModelParams
from retrieval.data.images import ID, IMAGE, scan_test
from retrieval.embed.feature_file import Features
from retrieval.embed.whitening import apply_whitening, fit_pca_whitening
from retrieval.model.network import build_model
from synthetic.dataset import make_demo


@pytest.fixture(scope="session")
def bundle_source(tmp_path_factory):
    """(params, {fold: ([(model, meta)], whitenings, reference Features)}, data root)."""
    root = tmp_path_factory.mktemp("bundle_data") / "demo"
    make_demo(root, DemoParams(seed=5, n_train_classes=2, n_test_classes=6, train_per_class=2, queries_per_class=2,
                               photos_per_ref_class=2, size=64))
    refs = scan_test(root, "reference")
    folds = {}
    for fold in (0, 1):
        torch.manual_seed(fold)
        model, meta = build_model(ModelParams(embedding_dim=16), pretrained="pypi")
        model.eval()
        emb = torch_embed(model, meta, root, refs[IMAGE].tolist())
        whitening = fit_pca_whitening(emb, 8, power=0.5) if fold == 0 else None
        if whitening is not None:
            emb = apply_whitening(emb, *whitening)
        meta_f = {**TTA, "amp": "off", "member_weights": [1.0], "fold": fold}
        folds[fold] = ([(model, meta)], [whitening], Features(refs[ID], emb, meta=meta_f))
    return tiny_bundle_params(root), folds, root


@pytest.fixture(scope="session")
def built_bundle(bundle_source, tmp_path_factory) -> Path:
    """The bundle written from :func:`bundle_source` (read only: copy it to change it)."""
    from retrieval.bundle.edit import replace_bundle
    from retrieval.bundle.export import bundle_parts

    params, folds, _ = bundle_source
    path = tmp_path_factory.mktemp("bundle") / "bundle"
    replace_bundle(path, bundle_parts(params, folds))
    return path


@pytest.fixture
def bundle_copy(built_bundle, tmp_path) -> Path:
    """A fresh copy of the built bundle, to change."""
    path = tmp_path / "bundle"
    shutil.copytree(built_bundle, path)
    return path
