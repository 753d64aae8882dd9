"""Embedding images with one model: batched, L2-normalised, with optional flip and multi-scale TTA."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from retrieval.data.loaders import ImageDataset, eval_transform, make_loader
from retrieval.embed.feature_file import l2_normalise
from retrieval.model.network import EmbeddingModel, autocast_dtype
from retrieval.resources import keep_freed_memory


@torch.inference_mode()
def embed_images(model: EmbeddingModel, meta: dict, root: str | Path, images: Sequence[str],
                 image_size: int, batch_size: int, flip_tta: bool, num_workers: int,
                 amp: str = "auto", channels_last: bool = True,
                 desc: str = "embed") -> tuple[np.ndarray, float]:
    """L2-normalised float32 embeddings of ``images`` (paths relative to ``root``), in order.

    ``batch_size``, ``flip_tta`` and ``num_workers`` have no default here: the caller passes its
    params' (params.yaml is their one home).

    With ``flip_tta`` the embeddings of the image and its mirror are summed, then normalised.
    Returns the embeddings and the images per second of the whole loop.
    """
    device = next(model.parameters()).device
    dtype = autocast_dtype(amp, device)
    keep_freed_memory()  # each batch's big activations reused, not page-faulted afresh
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ds = ImageDataset(root, images, np.arange(len(images)), eval_transform(image_size, meta["mean"], meta["std"]))
    loader = make_loader(ds, batch_size, shuffle=False, num_workers=num_workers)
    out = np.zeros((len(images), model.neck[0].out_features), dtype=np.float32)
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", disable=None, leave=False)
    for x, idx in bar:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            e = model(x)
            if flip_tta:
                e = e + model(torch.flip(x, dims=[3]))
        out[idx.numpy()] = torch.nn.functional.normalize(e.float(), dim=1).cpu().numpy()
    rate = len(images) / max(time.perf_counter() - start, 1e-9)
    return out, rate


def tta_sizes(image_size: int, scales: Sequence[float]) -> list[int]:
    """Input sizes of multi-scale TTA: ``image_size`` x each scale, rounded to a multiple of 8."""
    return [max(8, int(round(image_size * s / 8)) * 8) for s in scales]


def embed_tta(model: EmbeddingModel, meta: dict, root: str | Path, images: Sequence[str], image_size: int,
              scales: Sequence[float], flip_tta: bool, batch_size: int, num_workers: int,
              amp: str = "auto", desc: str = "embed") -> tuple[np.ndarray, float]:
    """Multi-scale (and flip) TTA: the L2-normalised sum of :func:`embed_images` at each of
    :func:`tta_sizes`; with one scale of 1.0 it is :func:`embed_images` itself. Returns the
    embeddings and the images per second over all scales."""
    start = time.perf_counter()
    total = None
    for size in tta_sizes(image_size, scales):
        e, _ = embed_images(model, meta, root, images, size, batch_size, flip_tta, num_workers, amp,
                            desc=f"{desc} {size}px" if len(scales) > 1 else desc)
        total = e if total is None else total + e
    return l2_normalise(total), len(images) / max(time.perf_counter() - start, 1e-9)
