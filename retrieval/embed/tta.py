"""Embedding images with one model: batched, L2-normalised, with optional flip and multi-scale TTA.

Inside :func:`sharded_over` (the extract stage under torchrun), every embedding loop is split
over the processes: each embeds a contiguous slice of the images and all get every row back.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from retrieval.data.loaders import ImageDataset, SizedViews, eval_images, eval_transform, make_loader
from retrieval.model.checkpoints import weights_fingerprint
from retrieval.model.network import EmbeddingModel, autocast_dtype
from retrieval.resources import keep_freed_memory
from retrieval.train.distributed import Dist, gather_rows, rank_slice
from retrieval.vectors import l2_normalise

_SHARDS: contextvars.ContextVar[Dist | None] = contextvars.ContextVar("embedding_shards", default=None)


@contextlib.contextmanager
def sharded_over(d: Dist):
    """Within it, each embedding loop is split over ``d``'s processes (all must embed the same
    images in the same order); a single process embeds as without it."""
    token = _SHARDS.set(d if d.enabled and d.world > 1 else None)
    try:
        yield
    finally:
        _SHARDS.reset(token)


def embed_images(model: EmbeddingModel, meta: dict, root: str | Path, images: Sequence[str],
                 image_size: int, batch_size: int, flip_tta: bool, num_workers: int,
                 amp: str, channels_last: bool, desc: str = "embed") -> tuple[np.ndarray, float]:
    """L2-normalised float32 embeddings of ``images`` (paths relative to ``root``), in order.

    ``batch_size``, ``flip_tta``, ``num_workers``, ``amp`` and ``channels_last`` have no default
    here: the caller passes its params' (params.yaml is their one home; extraction runs
    channels-last, as :func:`embed_tta` does).

    With ``flip_tta`` the embeddings of the image and its mirror are summed, then normalised.
    Returns the embeddings and the images per second of the whole loop.
    """
    ds = eval_images(root, images, image_size, meta["mean"], meta["std"])
    return embed_dataset(model, ds, batch_size, flip_tta, num_workers, amp, channels_last, desc)


def embed_dataset(model: EmbeddingModel, ds: torch.utils.data.Dataset, batch_size: int, flip_tta: bool,
                  num_workers: int, amp: str, channels_last: bool, desc: str = "embed") -> tuple[np.ndarray, float]:
    """:func:`embed_images` of a dataset whose items are (image tensor, row), such as
    :class:`retrieval.data.loaders.HeldImages`."""
    (out,), rate = _embed_views(model, ds, 1, batch_size, flip_tta, num_workers, amp, channels_last, desc, "torch")
    return out, rate


@torch.inference_mode()
def _embed_views(model: EmbeddingModel, ds: torch.utils.data.Dataset, n_views: int, batch_size: int,
                 flip_tta: bool, num_workers: int, amp: str, channels_last: bool,
                 desc: str, runtime: str) -> tuple[list[np.ndarray], float]:
    """L2-normalised float32 embeddings of each view of a dataset's items, in order: an item is
    (an image tensor, or a list of ``n_views`` of them, e.g. one a size; its row).
    One array per view, and the images per second of the whole loop. ``runtime`` onnxruntime
    runs the forward in ONNX Runtime (fp32, ``amp`` aside) on the CPU; CUDA stays with torch."""
    device = next(model.parameters()).device
    forward = _onnx_forward(model) if runtime == "onnxruntime" and device.type == "cpu" else None
    dtype = autocast_dtype(amp, device)
    keep_freed_memory()  # each batch's big activations reused, not page-faulted afresh
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    n, d = len(ds), _SHARDS.get()
    lo, hi = rank_slice(n, d) if d is not None else (0, n)  # items carry their row: lo..hi-1
    loader = make_loader(ds if d is None else torch.utils.data.Subset(ds, range(lo, hi)), batch_size,
                         shuffle=False, num_workers=num_workers)
    outs = [np.zeros((hi - lo, model.neck[0].out_features), dtype=np.float32) for _ in range(n_views)]
    start = time.perf_counter()
    for views, idx in tqdm(loader, desc=desc, unit="batch", disable=None, leave=False):
        for out, x in zip(outs, views if isinstance(views, list) else [views], strict=True):
            out[idx.numpy() - lo] = (_embed_batch(model, x, flip_tta, device, dtype, channels_last) if forward is None
                                     else forward(x.numpy(), flip_tta))
    if d is not None:
        outs = gather_rows(outs, d)
    return outs, n / max(time.perf_counter() - start, 1e-9)


def _embed_batch(model: EmbeddingModel, x: torch.Tensor, flip_tta: bool, device: torch.device,
                 dtype: torch.dtype | None, channels_last: bool) -> np.ndarray:
    """One batch's L2-normalised embeddings (with ``flip_tta``, of the image plus its mirror)."""
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        e = model(x)
        if flip_tta:
            e = e + model(torch.flip(x, dims=[3]))
    return torch.nn.functional.normalize(e.float(), dim=1).cpu().numpy()


# model -> (its weights' fingerprint, its ONNX Runtime session)
_ONNX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _onnx_forward(model: EmbeddingModel):
    """``(batch array, flip_tta) -> embeddings`` of the model in ONNX Runtime, exported once per
    model and weights (exported again if its weights changed since)."""
    from retrieval.bundle.onnx_model import embed_views, onnx_bytes, onnx_session

    weights = weights_fingerprint(model)
    if _ONNX.get(model, ("",))[0] != weights:
        _ONNX[model] = weights, onnx_session(onnx_bytes(model))
    session = _ONNX[model][1]
    return lambda x, flip_tta: embed_views(session, x, flip_tta)


def tta_sizes(image_size: int, scales: Sequence[float]) -> list[int]:
    """Input sizes of multi-scale TTA: ``image_size`` x each scale, rounded to a multiple of 8."""
    return [max(8, int(round(image_size * s / 8)) * 8) for s in scales]


def embed_tta(model: EmbeddingModel, meta: dict, root: str | Path, images: Sequence[str], image_size: int,
              scales: Sequence[float], flip_tta: bool, batch_size: int, num_workers: int,
              amp: str, runtime: str, desc: str = "embed") -> tuple[np.ndarray, float]:
    """Multi-scale (and flip) TTA: the L2-normalised sum of :func:`embed_images` at each of
    :func:`tta_sizes`, each image decoded once for all of them; with one scale of 1.0 it is
    :func:`embed_images` itself. Returns the embeddings and the images per second over all scales.
    ``runtime`` (``extract.runtime``): torch, or onnxruntime for the forward on the CPU."""
    sizes = tta_sizes(image_size, scales)
    views = SizedViews([eval_transform(size, meta["mean"], meta["std"]) for size in sizes])
    ds = ImageDataset(root, images, np.arange(len(images)), views)
    outs, rate = _embed_views(model, ds, len(sizes), batch_size, flip_tta, num_workers, amp, True, desc, runtime)
    total = outs[0]
    for e in outs[1:]:
        total = total + e
    return l2_normalise(total), rate
