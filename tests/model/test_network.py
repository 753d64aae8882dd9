"""The embedding model on tiny inputs: shape, unit norm, no NaN, gradients, round trip."""
from pathlib import Path

import pytest
import torch

from retrieval.config import ModelParams
from retrieval.model.checkpoints import model_from_checkpoint, save_members
from retrieval.model.losses import margin_loss
from retrieval.model.network import (autocast_dtype, build_model, fix_bn_statistics, freeze_stages, gem,
                                     set_train_mode)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, meta = build_model(ModelParams(embedding_dim=16), pretrained="none")
    return model, meta


def test_gem_golden():
    # one channel, values 1 and 3 (twice each): p=1 is the mean, p=2 is the root mean square
    x = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]]]])
    assert gem(x, 1.0).item() == pytest.approx(2.0)
    assert gem(x, 2.0).item() == pytest.approx((5.0) ** 0.5)  # sqrt((1 + 9) / 2)
    assert gem(x, 50.0).item() == pytest.approx(3.0, rel=0.02)  # large p tends to the max


def test_gem_clamps_negatives():
    x = torch.tensor([[[[-4.0, 0.0]]]])
    assert torch.isfinite(gem(x, 3.0)).all()


def test_forward_shape_norm_no_nan(tiny):
    model, _ = tiny
    model.eval()
    with torch.no_grad():
        e = model(torch.randn(3, 3, 64, 64))
    assert e.shape == (3, 16)
    assert torch.isfinite(e).all()
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)


def test_gradients_reach_trainable_not_frozen(tiny):
    model, _ = tiny
    frozen = freeze_stages(model, 2)
    set_train_mode(model, frozen)
    assert not model.backbone.blocks[0].training and model.backbone.blocks[3].training
    loss_fn = margin_loss("arcface", 4, 16, margin=0.3, scale=30.0)
    loss = loss_fn(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.backbone.conv_stem.weight.grad is None
    assert model.backbone.blocks[1][0].conv_pw.weight.grad is None
    assert model.backbone.blocks[2][0].conv_pw.weight.grad.abs().sum() > 0
    assert model.neck[0].weight.grad.abs().sum() > 0
    assert model.pool.p.grad is not None
    assert loss_fn.W.grad.abs().sum() > 0
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None


def test_fixed_bn_statistics_stay_put_while_the_rest_trains(tiny):
    model, _ = tiny
    model.train()
    fix_bn_statistics(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert model.training and model.backbone.blocks[3].training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(m.weight.grad is not None for m in bns if m.affine)  # scale and shift still learn
    model.zero_grad(set_to_none=True)
    model.train()


@pytest.mark.parametrize("head", ["arcface", "cosface"])
def test_margin_lowers_target_logit(head):
    # with a margin the loss is higher than without for the same embeddings: the margin bites
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    y = torch.arange(8) % 4
    with_m = margin_loss(head, 4, 16, margin=0.3, scale=30.0)
    no_m = margin_loss(head, 4, 16, margin=0.0, scale=30.0)
    no_m.W.data.copy_(with_m.W.data)
    assert with_m(e, y).item() > no_m(e, y).item()


def test_checkpoint_round_trip(tiny, tmp_path):
    model, meta = tiny
    model.eval()
    save_members(tmp_path / "m.pt", [(model.state_dict(), {**meta, "epoch": 3})])
    again, meta2 = model_from_checkpoint(tmp_path / "m.pt")
    assert meta2["epoch"] == 3 and meta2["backbone"] == "tf_efficientnet_lite0"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), again(x), atol=1e-6)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from retrieval.io import InputError
    with pytest.raises(InputError, match="no checkpoint"):
        model_from_checkpoint(tmp_path / "nope.pt")


def test_autocast_keeps_cpu_training_in_fp32_under_auto():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu, training=True) is None  # bf16's backward is the slower one there
    assert autocast_dtype("bf16", cpu, training=True) == torch.bfloat16  # asked for explicitly
    assert autocast_dtype("off", cpu) is None
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)  # inference: where the CPU has it
