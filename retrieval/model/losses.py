"""The training losses: a margin head (ArcFace, CosFace, sub-center ArcFace) with its own class
centres, a pair loss with its miner (triplet, multi-similarity), and their sum."""
from __future__ import annotations

import math

from pytorch_metric_learning import losses
import torch
from torch import nn

from retrieval.config import ModelParams, TrainParams


def margin_loss(head: str, n_classes: int, embedding_dim: int, margin: float, scale: float,
                sub_centers: int | None = None) -> nn.Module | None:
    """The margin head as a loss with its own class-centre weights (pytorch-metric-learning).

    ``margin`` is in radians for ArcFace and sub-center ArcFace (PML takes degrees) and a
    cosine margin for CosFace. ``head == "none"`` gives None (a pair loss trains alone).
    ``sub_centers`` (``model.sub_centers``) is the sub-center head's and only its: required there.
    """
    if head == "arcface":
        return losses.ArcFaceLoss(n_classes, embedding_dim, margin=math.degrees(margin), scale=scale)
    if head == "subcenter_arcface":
        if sub_centers is None:
            raise ValueError("subcenter_arcface needs sub_centers (model.sub_centers)")
        return losses.SubCenterArcFaceLoss(num_classes=n_classes, embedding_size=embedding_dim,
                                           margin=math.degrees(margin), scale=scale, sub_centers=sub_centers)
    if head == "cosface":
        return losses.CosFaceLoss(n_classes, embedding_dim, margin=margin, scale=scale)
    if head == "none":
        return None
    raise ValueError(f"unknown head {head!r}")


class PairLoss(nn.Module):
    """A pair-based loss over the batch with its miner (pytorch-metric-learning):

    - ``triplet``: triplet margin loss (margin 0.1 on cosine similarity) over semi-hard triplets;
    - ``multisimilarity``: multi-similarity loss (alpha 2, beta 50, base 0.5) over the pairs its
      miner keeps (epsilon 0.1).

    A batch with no positive pair (every label once) gives a zero loss that still has a graph.
    """

    def __init__(self, kind: str):
        super().__init__()
        from pytorch_metric_learning import distances, miners

        cosine = distances.CosineSimilarity()
        if kind == "triplet":
            self.miner = miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard", distance=cosine)
            self.loss = losses.TripletMarginLoss(margin=0.1, distance=cosine)
        elif kind == "multisimilarity":
            self.miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=cosine)
            self.loss = losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5, distance=cosine)
        else:
            raise ValueError(f"unknown pair loss {kind!r}")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


class MetricLoss(nn.Module):
    """The training loss: margin head, pair loss, or margin head + ``pair_weight``
    (``train.pair_loss_weight``) x pair loss."""

    def __init__(self, head: nn.Module | None, pair: nn.Module | None, pair_weight: float):
        super().__init__()
        if head is None and pair is None:
            raise ValueError("a margin head, a pair loss, or both")
        self.head, self.pair, self.pair_weight = head, pair, pair_weight

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = embeddings.new_zeros(())
        if self.head is not None:
            total = total + self.head(embeddings, labels)
        if self.pair is not None:
            total = total + self.pair_weight * self.pair(embeddings, labels)
        return total


def metric_loss(mp: ModelParams, tp: TrainParams, n_classes: int) -> MetricLoss:
    """:class:`MetricLoss` as ``model`` and ``train`` params configure it."""
    head = margin_loss(mp.head, n_classes, mp.embedding_dim, mp.margin, mp.scale, mp.sub_centers)
    pair = PairLoss(tp.pair_loss) if tp.pair_loss != "none" else None
    return MetricLoss(head, pair, tp.pair_loss_weight)
