"""Depthwise convolutions whose weight gradient is computed as one grouped convolution.

On a CPU, the weight gradient of a 5x5 depthwise convolution on a small map is oneDNN's slowest
step in training MobileNetV3 or EfficientNet-Lite: several times the forward pass. The same
gradient is a correlation of each image's channel with its own output gradient, summed over the
batch, which is a depthwise convolution over batch x channels that oneDNN runs fast.
`use_grouped_weight_grad` switches a model's 5x5 (and larger) depthwise convolutions to it; the
forward pass, the input gradient and the parameters (state dict keys included) are unchanged, and
the gradients equal aten's to float rounding (tests/test_depthwise.py). Where aten is as fast or
faster (3x3 kernels, strided layers with a large output) aten's gradient is kept;
`benchmarks/depthwise_grad.py` measures both per layer (docs/performance.md).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

MIN_KERNEL = 5  # measured (benchmarks/depthwise_grad.py): slower than aten at 3x3
MAX_STRIDED_OUTPUT = 6  # ... and for strided layers with a larger output side


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: Tuple[int, int],
                          stride: Tuple[int, int], padding: Tuple[int, int]) -> torch.Tensor:
    """Weight gradient Cx1xKhxKw of a depthwise convolution (dilation 1) with input x NxCxHxW and
    output gradient grad_out NxCxHoxWo: the images' channels become the groups of one convolution
    whose kernel is grad_out, with the stride as its dilation."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[-2:]
    images = x.contiguous().view(1, n * c, h, w)
    kernels = grad_out.contiguous().view(n * c, 1, ho, wo)
    grad = F.conv2d(images, kernels, None, 1, padding, stride, n * c)[..., :kernel[0], :kernel[1]]
    return grad.reshape(n, c, kernel[0], kernel[1]).sum(0).unsqueeze(1)


class GroupedWeightGradConv(torch.autograd.Function):
    """conv2d(x, weight, bias, stride, padding, groups=C) with the weight gradient of
    `depthwise_weight_grad` and aten's input gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                stride: Tuple[int, int], padding: Tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0],
                weight.shape[0], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_weight_grad(x, grad_out, weight.shape[-2:], ctx.stride, ctx.padding)
            grad_weight = grad_weight.contiguous(memory_format=torch.channels_last) \
                if weight.is_contiguous(memory_format=torch.channels_last) else grad_weight
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None


class GroupedWeightGradDepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d with groups == in == out channels, training its weight through
    `GroupedWeightGradConv` where `grouped_grad_pays`; elsewhere, and without gradients, it is nn.Conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad and grouped_grad_pays(self, x.shape[-2:]):
            return GroupedWeightGradConv.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)


def grouped_grad_pays(conv: nn.Conv2d, side: Tuple[int, int]) -> bool:
    """Whether the grouped weight gradient is the faster one for `conv` on an input of `side`
    (HxW): stride 1, or a strided output of at most MAX_STRIDED_OUTPUT pixels a side."""
    if conv.stride == (1, 1):
        return True
    out = [(n + 2 * p - k) // s + 1 for n, p, k, s in zip(side, conv.padding, conv.kernel_size, conv.stride)]
    return max(out) <= MAX_STRIDED_OUTPUT


def is_large_depthwise(module: nn.Module, min_kernel: int = MIN_KERNEL) -> bool:
    """A plain zero-padded, undilated depthwise nn.Conv2d with a kernel of at least min_kernel."""
    return (type(module) is nn.Conv2d and module.groups == module.in_channels == module.out_channels
            and module.dilation == (1, 1) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and min(module.kernel_size) >= min_kernel)


def use_grouped_weight_grad(model: nn.Module, min_kernel: int = MIN_KERNEL) -> int:
    """Switch every large-kernel depthwise convolution of `model` in place (same parameters and
    state dict) to `GroupedWeightGradDepthwiseConv2d`; returns how many were switched."""
    switched = 0
    for module in model.modules():
        if is_large_depthwise(module, min_kernel):
            module.__class__ = GroupedWeightGradDepthwiseConv2d
            switched += 1
    return switched
