"""Helpers of the bundle tests (the fixtures are in conftest.py)."""
from pathlib import Path

import numpy as np

from retrieval.config import parse_params
from retrieval.embed.tta import embed_tta

TTA = {"image_size": 48, "scales": [1.0, 1.5], "flip_tta": True}


def tiny_bundle_params(root: Path):
    return parse_params({"data": {"root": str(root)}, "cv": {"n_folds": 2, "folds": [0, 1]},
                         "extract": {**TTA, "whiten_dim": 8, "batch_size": 16, "num_workers": 0},
                         "rerank": {"k": 40, "steps": ["dba", "qe", "diffusion"], "dba": {"k": 2}, "qe": {"k": 2}},
                         "ensemble": {"fold_weights": [1.0, 2.0]}})


def torch_embed(model, meta, root, images) -> np.ndarray:
    """The pipeline's (torch, float32) embeddings of image paths under ``root``."""
    return embed_tta(model, meta, root, images, TTA["image_size"], TTA["scales"], TTA["flip_tta"], 16, 0, amp="off",
                     runtime="torch")[0]
