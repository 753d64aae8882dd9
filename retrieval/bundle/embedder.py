"""A fold's models in ONNX Runtime: the embedding of images as the pipeline's extract makes it
(:func:`retrieval.embed.tta.embed_tta` for each backbone, its whitening, the backbones fused by
weighted concatenation), with no torch.

For each input size (multi-scale TTA) an image's embedding is the model's L2-normalised output,
plus that of its mirror image with flip TTA, normalised again; the sizes' embeddings are summed
and normalised; then whitened (:func:`retrieval.embed.members.whiten`) and the backbones'
blocks concatenated with their weights."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.bundle.onnx_model import embed_views
from retrieval.bundle.preprocess import eval_input
from retrieval.vectors import l2_normalise
from retrieval.embed.members import Whitening, embed_members


class Member:
    """One backbone of a fold: its session, normalisation and whitening."""

    def __init__(self, session, mean: Sequence[float], std: Sequence[float], whitening: Whitening):
        self.session, self.mean, self.std, self.whitening = session, list(mean), list(std), whitening

    def embed(self, images: Sequence[np.ndarray], sizes: Sequence[int], flip_tta: bool) -> np.ndarray:
        """L2-normalised TTA embeddings of RGB uint8 arrays (not yet whitened)."""
        total = None
        for size in sizes:
            e = embed_views(self.session, eval_input(images, size, self.mean, self.std), flip_tta)
            total = e if total is None else total + e
        return l2_normalise(total)


class FoldModel:
    """A fold's members, their weights and the TTA: :meth:`embed` gives the fold's embedding,
    the one its reference features were made with."""

    def __init__(self, members: list[Member], weights: Sequence[float], sizes: Sequence[int], flip_tta: bool,
                 batch_size: int = 32):
        self.members, self.weights, self.sizes = members, list(weights), list(sizes)
        self.flip_tta, self.batch_size = flip_tta, batch_size

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] float32 embeddings of RGB uint8 arrays, in batches of ``batch_size``."""
        chunks = [self._embed(images[a : a + self.batch_size]) for a in range(0, len(images), self.batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def _embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return embed_members(self.members, [m.whitening for m in self.members], self.weights,
                             lambda m: m.embed(images, self.sizes, self.flip_tta))
