"""The optimiser's side of training: per-layer learning rates, the warm-up + cosine schedule and
its head warm-up, the weight EMA, L2-SP's pull to the start and WiSE-FT's weight-space mix."""
import numpy as np
import pytest
import torch

from retrieval.config import ModelParams, TrainParams
from retrieval.model.losses import metric_loss
from retrieval.model.network import backbone_layer_ids, build_model
from retrieval.train.optim import EMA, PullToStart, group_schedules, interpolate, lr_factor, param_groups


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    model, _ = build_model(ModelParams(embedding_dim=8), pretrained="none")
    return model


def test_backbone_layers_are_stem_then_stages(lite0):
    ids, top = backbone_layer_ids(lite0.backbone)
    assert top == 7  # stem = 0, the 7 stages of EfficientNet-lite = 1..7 (conv_head joins the last)
    assert ids["conv_stem.weight"] == 0 and ids["blocks.0.0.conv_dw.weight"] == 1
    assert ids["blocks.6.0.conv_pw.weight"] == 7 and ids["conv_head.weight"] == 7


def test_param_groups_golden_rates_and_each_parameter_once(lite0):
    tp = TrainParams(lr=1e-3, backbone_lr_scale=0.1, layer_decay=0.5, head_lr=1e-2)
    loss_fn = metric_loss(ModelParams(embedding_dim=8), tp, 5)
    groups = param_groups(lite0, loss_fn, tp)
    backbone = [g for g in groups if g["backbone"]]
    # top stage at lr x 0.1 = 1e-4, each layer below it halved; stem (7 layers down) 1e-4 / 128
    assert [g["lr"] for g in backbone] == pytest.approx([1e-4 * 0.5 ** (7 - i) for i in range(8)])
    assert [g["lr"] for g in groups[-2:]] == [1e-3, 1e-2]  # neck + GeM p, then the head
    ids = [id(p) for g in groups for p in g["params"]]
    expected = [p for p in lite0.parameters()] + list(loss_fn.parameters())
    assert sorted(ids) == sorted(id(p) for p in expected)  # every trainable parameter, once


def test_param_groups_leave_out_frozen_parameters(lite0):
    tp = TrainParams()
    for p in lite0.backbone.conv_stem.parameters():
        p.requires_grad_(False)
    try:
        groups = param_groups(lite0, metric_loss(ModelParams(embedding_dim=8), tp, 5), tp)
        held = {id(p) for g in groups for p in g["params"]}
        assert id(lite0.backbone.conv_stem.weight) not in held
        assert id(lite0.backbone.bn1.weight) in held  # the stem's BatchNorm was not frozen here
    finally:
        for p in lite0.backbone.conv_stem.parameters():
            p.requires_grad_(True)


def test_group_schedules_hold_the_backbone_during_head_warmup():
    groups = [{"backbone": True}, {"backbone": False}]
    backbone, rest = group_schedules(groups, total=10, warmup=2, head_steps=4)
    assert [backbone(s) for s in range(4)] == [0.0] * 4
    assert backbone(4) == pytest.approx(0.5) and backbone(5) == pytest.approx(1.0)  # its own warm-up
    assert backbone(10) == pytest.approx(0.01)  # the same end as the rest
    assert [rest(s) for s in (0, 1, 2)] == pytest.approx([0.5, 1.0, 1.0])
    same, _ = group_schedules(groups, total=10, warmup=2, head_steps=0)
    assert [same(s) for s in range(11)] == [rest(s) for s in range(11)]


def test_ema_golden_with_its_decay_ramp():
    net = torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(10.0)
    net.num_batches_tracked.fill_(7)
    ema.update(net)  # decay min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 10 = 9
    assert ema.state["weight"].item() == pytest.approx(9.0)
    assert ema.state["num_batches_tracked"].item() == 7  # integers are copied, not averaged
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema.update(net)  # decay min(0.5, 2/11) = 2/11: 9 * 2/11
    assert ema.state["weight"].item() == pytest.approx(18 / 11)
    for _ in range(20):
        ema.update(net)  # the ramp passes 0.5 after 8 updates; then halves every step
    assert ema.state["weight"].item() == pytest.approx(18 / 11 * np.prod([min(0.5, (1 + n) / (10 + n)) for n in range(2, 22)]))


def test_lr_factor_golden():
    # 10 steps, 2 of warm-up: 0.5, 1.0, then cosine from 1 down to the floor
    assert lr_factor(0, 10, 2) == pytest.approx(0.5)
    assert lr_factor(1, 10, 2) == pytest.approx(1.0)
    assert lr_factor(2, 10, 2) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, floor=0.0) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(10, 10, 2, floor=0.01) == pytest.approx(0.01)
    assert lr_factor(0, 10, 0) == pytest.approx(1.0)  # no warm-up


def test_interpolate_golden_and_ends():
    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(1)}
    end = {"w": torch.tensor([4.0, 2.0]), "n": torch.tensor(9)}
    mixed = interpolate(start, end, 0.25)
    assert mixed["w"].tolist() == [1.0, 2.0] and mixed["n"].item() == 9
    assert torch.equal(interpolate(start, end, 1.0)["w"], end["w"])


def test_pull_to_start_golden_backbone_groups_only():
    w, v = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([5.0]))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1, "backbone": True},
                           {"params": [v], "lr": 0.1, "backbone": False}])
    pull = PullToStart(opt, decay=2.0)  # remembers w = [1, -2]
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 0.0]))
        v.copy_(torch.tensor([7.0]))
    pull()  # 0.1 x 2 = a fifth of the way back
    assert w.tolist() == pytest.approx([2.6, -0.4]) and v.tolist() == [7.0]
    opt.param_groups[0]["lr"] = 0.0  # a frozen or held group (head warm-up) is not pulled
    pull()
    assert w.tolist() == pytest.approx([2.6, -0.4])
    opt.load_state_dict(opt.state_dict())  # as a resume does: new group dicts, the rate read from them
    opt.param_groups[0]["lr"] = 0.05
    pull()  # a tenth of the way
    assert w.tolist() == pytest.approx([2.44, -0.56])
