"""A fold's backbones ("members") over one list of images: each embeds the images (with the TTA
it was configured with) and whitens them with its own whitening, and the blocks are fused by
weighted concatenation (:mod:`retrieval.embed.backbone_fusion`). Used by ``extract`` and by the
search of new images alike."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from retrieval.embed.backbone_fusion import concat_weighted
from retrieval.embed.whitening import apply_whitening

Whitening = tuple[np.ndarray, np.ndarray] | None  # (mean, projection), or None: no whitening


def member_blocks(members: Sequence, whitenings: Sequence[Whitening],
                  embed: Callable[[object], np.ndarray]) -> list[np.ndarray]:
    """Each member's block: ``embed(member)`` (L2-normalised rows), whitened with its whitening."""
    if len(members) != len(whitenings):
        raise ValueError(f"{len(whitenings)} whitenings for {len(members)} members")
    return [whiten(embed(m), w) for m, w in zip(members, whitenings)]


def whiten(x: np.ndarray, whitening: Whitening) -> np.ndarray:
    """``x`` whitened (:func:`retrieval.embed.whitening.apply_whitening`), or as it is for None."""
    return apply_whitening(x, *whitening) if whitening is not None else x


def embed_members(members: Sequence, whitenings: Sequence[Whitening], weights: Sequence[float],
                  embed: Callable[[object], np.ndarray]) -> np.ndarray:
    """The fused embedding: :func:`member_blocks`, concatenated with ``weights``."""
    return concat_weighted(member_blocks(members, whitenings, embed), weights)
