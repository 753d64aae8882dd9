"""The small-map convolutions: hand-worked tap matrices, forward and gradients against
F.conv2d (in float64, where both are exact to rounding), the same bits where the path is not
taken, and the swap on a real backbone."""
import copy

import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame
from torch import nn

from retrieval.config import ModelParams
from retrieval.model import small_maps
from retrieval.model.network import build_model, freeze_stages
from retrieval.model.small_maps import SmallMapConv2d, tap_matrix, takes_small_maps, use_small_map_convs


def _taps(in_hw, kernel, stride, pads):
    taps, out_hw = tap_matrix(in_hw, kernel, stride, pads)
    h, w = in_hw
    return taps.view(kernel[0] * kernel[1], h * w, -1), out_hw


def test_tap_matrix_2x2_map_3x3_kernel():
    taps, out_hw = _taps((2, 2), (3, 3), (1, 1), (1, 1, 1, 1))
    assert out_hw == (2, 2)
    assert torch.equal(taps.sum(0), torch.ones(4, 4))  # every input pixel reaches every output pixel by one tap
    # input (row, col) -> output (row, col): tap (in_row + 1 - out_row, in_col + 1 - out_col)
    assert taps[4, 0, 0] == 1  # (0,0) -> (0,0): the centre
    assert taps[8, 3, 0] == 1  # (1,1) -> (0,0): tap (2,2)
    assert taps[2, 1, 2] == 1  # (0,1) -> (1,0): tap (0,2)
    assert taps[0, 0, 3] == 1  # (0,0) -> (1,1): tap (0,0)


def test_tap_matrix_one_pixel_is_the_centre_tap():
    taps, out_hw = _taps((1, 1), (5, 5), (1, 1), (2, 2, 2, 2))
    assert out_hw == (1, 1)
    assert taps.flatten().nonzero().flatten().tolist() == [12]


def test_tap_matrix_same_padding_stride_2():
    # timm's pad_same on a 2 x 2 map, 5 x 5 kernel, stride 2: 3 pixels a side, 1 before and 2 after
    taps, out_hw = _taps((2, 2), (5, 5), (2, 2), (1, 2, 1, 2))
    assert out_hw == (1, 1)
    assert [taps[:, i, 0].nonzero().item() for i in range(4)] == [6, 7, 11, 12]


def _conv(kind: str, channels: int, k: int, stride: int, bias: bool) -> nn.Conv2d:
    torch.manual_seed(k * 10 + stride)
    if kind == "same":
        conv = Conv2dSame(channels, channels, k, stride, groups=channels, bias=bias)
    elif kind == "depthwise":
        conv = nn.Conv2d(channels, channels, k, stride, padding=k // 2, groups=channels, bias=bias)
    else:
        conv = nn.Conv2d(channels, channels + 3, 1, bias=bias)
    with torch.no_grad():
        for p in conv.parameters():
            p.normal_()
    return conv.double()


def _forward_backward(conv: nn.Module, x: torch.Tensor, grad: torch.Tensor | None = None):
    x = x.clone().requires_grad_()
    y = conv(x)
    grad = torch.randn_like(y) if grad is None else grad
    y.backward(grad)
    return y, x.grad, [p.grad.clone() for p in conv.parameters()], grad


CASES = [("depthwise", 1, 1, 5, 1, False), ("depthwise", 1, 1, 3, 1, True), ("depthwise", 2, 2, 5, 1, False),
         ("depthwise", 2, 2, 3, 1, True), ("same", 2, 2, 5, 2, False), ("same", 2, 2, 3, 2, True),
         ("depthwise", 1, 2, 3, 1, False), ("same", 2, 1, 3, 2, True), ("same", 1, 1, 3, 2, False),
         ("pointwise", 1, 1, 1, 1, False), ("pointwise", 2, 2, 1, 1, True), ("pointwise", 1, 3, 1, 1, True)]


@pytest.mark.parametrize("kind,h,w,k,stride,bias", CASES)
def test_small_path_matches_the_convolution(kind, h, w, k, stride, bias):
    conv = _conv(kind, 6, k, stride, bias)
    small = SmallMapConv2d(copy.deepcopy(conv))
    assert takes_small_maps(conv)
    x = torch.randn(4, 6, h, w, dtype=torch.float64)
    want, want_dx, want_dw, grad = _forward_backward(conv, x)
    got, got_dx, got_dw, _ = _forward_backward(small, x, grad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_dx, want_dx, rtol=1e-12, atol=1e-12)
    for g, w_ in zip(got_dw, want_dw, strict=True):
        torch.testing.assert_close(g, w_, rtol=1e-12, atol=1e-12)


def test_one_pixel_depthwise_forward_is_the_convolutions_bits():
    conv = nn.Conv2d(64, 64, 5, padding=2, groups=64, bias=False)
    x = torch.randn(8, 64, 1, 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.equal(SmallMapConv2d(conv)(x), conv(x))


@pytest.fixture
def small_calls(monkeypatch):
    calls = []
    real = SmallMapConv2d._small
    monkeypatch.setattr(SmallMapConv2d, "_small", lambda self, x: calls.append(x.shape) or real(self, x))
    return calls


@pytest.mark.parametrize("case", ["no_grad", "frozen", "3x3 map", "unbatched", "2x2 map"])
def test_the_path_is_taken_only_for_recorded_small_maps(case, small_calls):
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    small = SmallMapConv2d(conv)
    side = 3 if case == "3x3 map" else 2
    x = torch.randn(8, side, side) if case == "unbatched" else torch.randn(2, 8, side, side)
    if case == "frozen":
        conv.weight.requires_grad_(False), conv.bias.requires_grad_(False)
    with torch.set_grad_enabled(case != "no_grad"):
        y = small(x)
    if case == "2x2 map":
        assert small_calls == [x.shape]
    else:
        assert small_calls == []
        assert torch.equal(y, conv(x))  # the convolution itself


def test_bf16_autocast_gives_the_convolutions_dtype():
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    x = torch.randn(4, 16, 2, 2, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = conv(x), SmallMapConv2d(conv)(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0.02, atol=0.05)


def test_a_kernel_wider_than_the_padded_map_fails_as_the_convolution_does():
    conv = nn.Conv2d(4, 4, 3, padding=0, groups=4)
    x = torch.randn(1, 4, 1, 1, requires_grad=True)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
        SmallMapConv2d(conv)(x)


def test_which_convolutions_are_swapped():
    assert takes_small_maps(nn.Conv2d(8, 8, 3, groups=8)) and takes_small_maps(nn.Conv2d(8, 4, 1))
    assert not takes_small_maps(nn.Conv2d(8, 8, 3))  # dense 3 x 3
    assert not takes_small_maps(nn.Conv2d(8, 16, 3, groups=8))  # two filters a channel
    assert not takes_small_maps(nn.Conv2d(8, 8, 3, groups=8, dilation=2))
    assert not takes_small_maps(nn.Conv2d(8, 8, 3, groups=8, padding=1, padding_mode="reflect"))
    assert not takes_small_maps(nn.Conv2d(8, 4, 1, stride=2))
    assert not takes_small_maps(nn.Conv2d(8, 8, 3, groups=8, padding="same"))


def test_swap_on_a_backbone_keeps_the_state_and_the_gradients():
    torch.manual_seed(0)
    model, _ = build_model(ModelParams(), pretrained="none")
    model = model.double()
    ref = copy.deepcopy(model)
    eligible = sum(takes_small_maps(m) for m in model.modules())
    assert use_small_map_convs(model) == eligible > 40
    assert sum(isinstance(m, SmallMapConv2d) for m in model.modules()) == eligible
    assert type(model.backbone.conv_stem) is Conv2dSame  # a dense 3 x 3: not swapped
    want = ref.state_dict()
    assert list(model.state_dict()) == list(want)
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    for m in (model, ref):
        freeze_stages(m, 2)
        m.eval()  # statistics fixed, as train.freeze_bn trains
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)  # its last maps are 1 x 1
    for m in (model, ref):  # the backbone (GeM pools in float32)
        m.backbone.forward_features(x).pow(2).sum().backward()
    pairs = [(p.grad, q.grad) for p, q in zip(model.parameters(), ref.parameters(), strict=True)]
    assert sum(g is not None for g, _ in pairs) > 50  # the neck has none
    for g, h in pairs:
        assert (g is None) == (h is None)
        if g is not None:
            torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-12)
    copy.deepcopy(model)  # an EMA copies the model


def test_small_path_is_used_at_32_px(small_calls):
    model, _ = build_model(ModelParams(), pretrained="none")
    use_small_map_convs(model)
    freeze_stages(model, 2)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert small_calls and all(s[-2] * s[-1] <= small_maps.SMALL_MAP_PIXELS for s in small_calls)
