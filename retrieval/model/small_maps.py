"""Depthwise and 1 x 1 convolutions on maps of a few pixels, computed for training on the CPU
without oneDNN's convolution.

Trained on small images (32 px), an EfficientNet's last stages run on 2 x 2 and 1 x 1 maps.
There oneDNN's convolution, and its backward above all, costs out of all proportion to the
arithmetic: the backward of a depthwise 5 x 5 convolution on a 1 x 1 map (a product with the
kernel's centre tap) took over a millisecond a batch of 32 (README, "Small maps"; the whole
step: ``bench/train_step.py``). :func:`use_small_map_convs` swaps a model's depthwise and 1 x 1
convolutions for :class:`SmallMapConv2d`, the same module with the same parameters (the state
dict is unchanged), whose forward, when autograd records it on the CPU and its input has at
most :data:`SMALL_MAP_PIXELS` pixels, is

- a depthwise convolution: each output pixel is the sum over the input pixels of the input
  times a per-channel weight, the kernel tap that joins the two (:func:`tap_matrix`); on a
  1 x 1 map that is the product with one tap, the convolution's own bits;
- a 1 x 1 convolution: a matrix product over the pixels (``F.linear``).

Any other input, and every forward that autograd does not record (validation, extraction,
frozen layers), is the convolution itself, bit for bit.
"""
from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from timm.layers.conv2d_same import Conv2dSame, conv2d_same
from timm.layers.padding import get_same_padding
from torch import nn

SMALL_MAP_PIXELS = 4  # maps of at most this many pixels (2 x 2 and smaller) take the small-map path


@functools.lru_cache(maxsize=64)
def tap_matrix(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
               pads: tuple[int, int, int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """Which kernel tap joins each input pixel to each output pixel of a convolution with zero
    padding ``pads`` (top, bottom, left, right): a 0/1 matrix [taps, in pixels x out pixels]
    (a column of zeros where no tap joins them), and the output's (height, width)."""
    (h, w), (kh, kw), (sh, sw), (top, bottom, left, right) = in_hw, kernel, stride, pads
    ho, wo = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    taps = torch.zeros(kh * kw, h * w, max(ho, 0) * max(wo, 0))
    for iy, ix, oy, ox in itertools.product(range(h), range(w), range(ho), range(wo)):
        ky, kx = iy + top - oy * sh, ix + left - ox * sw
        if 0 <= ky < kh and 0 <= kx < kw:
            taps[ky * kw + kx, iy * w + ix, oy * wo + ox] = 1.0
    return taps.flatten(1), (ho, wo)


class SmallMapConv2d(nn.Conv2d):
    """``conv`` (an ``nn.Conv2d`` or timm's ``Conv2dSame``, depthwise or 1 x 1) with the
    small-map path (module docstring); it holds ``conv``'s own parameters."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        self.same = isinstance(conv, Conv2dSame)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() == 4 and x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= SMALL_MAP_PIXELS
                and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return self._small(x)
        return self._conv(x)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            return conv2d_same(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return super().forward(x)

    def _small(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        n, c, h, w = x.shape
        pixels = x.to(dtype).permute(0, 2, 3, 1).reshape(n, h * w, c)
        weight = self.weight.to(dtype).flatten(1)
        bias = None if self.bias is None else self.bias.to(dtype)
        if self.groups == 1:  # 1 x 1
            return F.linear(pixels, weight, bias).view(n, h, w, -1).permute(0, 3, 1, 2)
        taps, (ho, wo) = tap_matrix((h, w), self.kernel_size, self.stride, self._pads(h, w))
        if ho < 1 or wo < 1:  # a kernel wider than the padded map: the convolution's own error
            return self._conv(x)
        mix = (weight @ taps.to(dtype)).view(c, h * w, ho * wo).permute(1, 2, 0)  # in pixel, out pixel, channel
        out = (pixels.unsqueeze(2) * mix).sum(1)
        out = out if bias is None else out + bias
        return out.view(n, ho, wo, c).permute(0, 3, 1, 2)

    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """Zero padding (top, bottom, left, right) of an h x w input, as timm's pad_same for ``same``."""
        if not self.same:
            return self.padding[0], self.padding[0], self.padding[1], self.padding[1]
        ph = get_same_padding(h, self.kernel_size[0], self.stride[0], 1)
        pw = get_same_padding(w, self.kernel_size[1], self.stride[1], 1)
        return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


def takes_small_maps(m: nn.Module) -> bool:
    """Whether ``m`` is a convolution :class:`SmallMapConv2d` computes: a plain ``nn.Conv2d`` or
    ``Conv2dSame`` with zero padding of whole pixels, no dilation, depthwise (one filter per
    channel) or 1 x 1 with stride 1 and no padding."""
    if type(m) not in (nn.Conv2d, Conv2dSame) or isinstance(m.padding, str) or m.padding_mode != "zeros":
        return False
    depthwise = m.groups == m.in_channels == m.out_channels
    pointwise = m.groups == 1 and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
    return m.dilation == (1, 1) and (depthwise or pointwise)


def use_small_map_convs(model: nn.Module) -> int:
    """Swap every convolution of ``model`` that :func:`takes_small_maps` for a
    :class:`SmallMapConv2d` holding the same parameters; the number swapped."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if takes_small_maps(child)]
    for parent, name, child in swaps:
        setattr(parent, name, SmallMapConv2d(child))
    return len(swaps)
