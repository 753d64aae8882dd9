"""Validation during training: a fold's validation mAP@1000 and P@1 (and each query's AP),
on its validation images decoded once and held when they fit."""
from __future__ import annotations

import pandas as pd
import torch

from retrieval.data.folds import IMAGE
from retrieval.data.loaders import HeldImages, eval_images
from retrieval.embed.tta import embed_dataset
from retrieval.validation_metrics import validation_map

HELD_VALID_BYTES = 2 << 30  # validation images held decoded (uint8) for the epochs when no bigger than this


def evaluate(model, images: torch.utils.data.Dataset, valid: pd.DataFrame, batch_size: int, num_workers: int,
             amp: str, channels_last: bool) -> dict:
    """The pipeline's mAP@1000, P@1 and each query's AP@1000 of the fold's validation queries
    against its validation references (``images``: :func:`validation_images` of ``valid``)."""
    emb, _ = embed_dataset(model, images, batch_size, flip_tta=False, num_workers=num_workers, amp=amp,
                           channels_last=channels_last, desc="validate")
    return validation_map(emb, valid["role"].to_numpy(), valid["label"].to_numpy(), per_query=True)


def validation_images(root: str, valid: pd.DataFrame, size: int, meta: dict) -> torch.utils.data.Dataset:
    """The fold's validation images as every validation embeds them: decoded and resized once
    and held when they take at most :data:`HELD_VALID_BYTES`, else decoded at each validation."""
    images = valid[IMAGE].tolist()
    if len(images) * size * size * 3 <= HELD_VALID_BYTES:
        return HeldImages(root, images, size, meta["mean"], meta["std"])
    return eval_images(root, images, size, meta["mean"], meta["std"])
