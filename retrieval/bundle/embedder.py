"""A fold's models in ONNX Runtime: the embedding of images as the pipeline's extract makes it
(:func:`retrieval.embed.tta.embed_tta` for each backbone, its whitening, the backbones fused by
weighted concatenation), with no torch.

For each input size (multi-scale TTA) an image's embedding is the model's L2-normalised output,
plus that of its mirror image with flip TTA, normalised again; the sizes' embeddings are summed
and normalised; then whitened (:func:`retrieval.embed.members.whiten`) and the backbones'
blocks concatenated with their weights.

The preprocessed input of a size (resize, normalise) depends only on the size and the
backbone's mean and std, so the folds of a bundle share it: :func:`embed_folds` makes each once
(a search's three folds then resize and normalise an image twice, not six times)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.bundle.onnx_model import embed_views
from retrieval.bundle.preprocess import eval_input
from retrieval.embed.members import Whitening, embed_members
from retrieval.vectors import l2_normalise

Inputs = dict[tuple, np.ndarray]  # (size, mean, std) -> a batch's eval input, shared by the folds


class Member:
    """One backbone of a fold: its session, normalisation and whitening."""

    def __init__(self, session, mean: Sequence[float], std: Sequence[float], whitening: Whitening):
        self.session, self.mean, self.std, self.whitening = session, list(mean), list(std), whitening

    def embed(self, images: Sequence[np.ndarray], sizes: Sequence[int], flip_tta: bool,
              inputs: Inputs | None = None) -> np.ndarray:
        """L2-normalised TTA embeddings of RGB uint8 arrays (not yet whitened); ``inputs``
        holds the eval inputs of ``images`` made so far (filled in here)."""
        inputs = {} if inputs is None else inputs
        total = None
        for size in sizes:
            key = (size, tuple(self.mean), tuple(self.std))
            if key not in inputs:
                inputs[key] = eval_input(images, size, self.mean, self.std)
            e = embed_views(self.session, inputs[key], flip_tta)
            total = e if total is None else total + e
        return l2_normalise(total)


class FoldModel:
    """A fold's members, their weights and the TTA: :meth:`embed` gives the fold's embedding,
    the one its reference features were made with."""

    def __init__(self, members: list[Member], weights: Sequence[float], sizes: Sequence[int], flip_tta: bool,
                 batch_size: int):
        self.members, self.weights, self.sizes = members, list(weights), list(sizes)
        self.flip_tta, self.batch_size = flip_tta, batch_size

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] float32 embeddings of RGB uint8 arrays, in batches of ``batch_size``."""
        return embed_folds({0: self}, images)[0]

    def embed_batch(self, images: Sequence[np.ndarray], inputs: Inputs) -> np.ndarray:
        """The embeddings of one batch, its eval inputs shared through ``inputs``."""
        return embed_members(self.members, [m.whitening for m in self.members], self.weights,
                             lambda m: m.embed(images, self.sizes, self.flip_tta, inputs))


def embed_folds(models: dict[int, FoldModel], images: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
    """Each fold's [N, D] embeddings of RGB uint8 arrays, in batches of the first fold's
    ``batch_size``, each batch resized and normalised once for all the folds."""
    step = next(iter(models.values())).batch_size if models else 1
    chunks: dict[int, list[np.ndarray]] = {fold: [] for fold in models}
    for a in range(0, len(images), step):
        inputs: Inputs = {}
        for fold, model in models.items():
            chunks[fold].append(model.embed_batch(images[a : a + step], inputs))
    return {fold: np.concatenate(c) if c else np.zeros((0, 0), np.float32) for fold, c in chunks.items()}
