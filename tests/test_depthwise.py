"""Depthwise convolutions with the grouped weight gradient equal nn.Conv2d (values and gradients)."""
import copy

import pytest
import torch
from torch import nn

from training.models.depthwise import (GroupedWeightGradDepthwiseConv2d, depthwise_weight_grad,
                                       grouped_grad_pays, is_large_depthwise, use_grouped_weight_grad)
from training.models.encoders import build_encoder

# (channels, side, kernel, stride, padding, bias): odd and even sides, strides 1 and 2, no padding
CASES = [(8, 12, 5, 1, 2, False), (8, 12, 5, 2, 2, False), (6, 7, 5, 2, 2, True), (5, 9, 5, 1, 0, True),
         (4, 10, 7, 2, 3, False), (3, 6, (5, 3), (2, 1), (2, 1), True)]


def gradients(conv: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = conv(x)
    out.backward(grad_out)
    return out, x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("channels,side,kernel,stride,padding,bias", CASES)
def test_gradients_equal_nn_conv2d(channels, side, kernel, stride, padding, bias, channels_last):
    torch.manual_seed(0)
    reference = nn.Conv2d(channels, channels, kernel, stride, padding, groups=channels, bias=bias)
    x = torch.randn(3, channels, side, side)
    if channels_last:
        reference = reference.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    grouped = copy.deepcopy(reference)
    assert use_grouped_weight_grad(grouped, min_kernel=1) == 1
    assert type(grouped) is GroupedWeightGradDepthwiseConv2d
    grad_out = torch.randn_like(reference(x))
    assert "GroupedWeightGradConv" in grouped(x.clone().requires_grad_(True)).grad_fn.name()
    for got, want in zip(gradients(grouped, x, grad_out), gradients(reference, x, grad_out)):
        if want is None:
            assert got is None
        else:
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_weight_grad_alone_and_without_input_grad():
    torch.manual_seed(1)
    x, weight = torch.randn(4, 6, 11, 11), torch.randn(6, 1, 5, 5)
    out = torch.nn.functional.conv2d(x, weight, None, 2, 2, 1, 6)
    grad_out = torch.randn_like(out)
    want = torch.ops.aten.convolution_backward(grad_out, x, weight, None, [2, 2], [2, 2], [1, 1], False, [0, 0],
                                               6, [False, True, False])[1]
    torch.testing.assert_close(depthwise_weight_grad(x, grad_out, (5, 5), (2, 2), (2, 2)), want,
                               rtol=1e-5, atol=1e-5)
    conv = nn.Conv2d(6, 6, 5, 2, 2, groups=6, bias=False)
    use_grouped_weight_grad(conv)
    conv(x).backward(grad_out)  # the input needs no gradient: the first layer of a network
    assert conv.weight.grad is not None


def test_only_large_plain_depthwise_convolutions_switch():
    assert is_large_depthwise(nn.Conv2d(8, 8, 5, groups=8))
    assert not is_large_depthwise(nn.Conv2d(8, 8, 3, groups=8))  # aten is faster at 3x3
    assert not is_large_depthwise(nn.Conv2d(8, 16, 5, groups=8))  # channel multiplier
    assert not is_large_depthwise(nn.Conv2d(8, 8, 5, groups=4))
    assert not is_large_depthwise(nn.Conv2d(8, 8, 5, groups=8, dilation=2))
    assert not is_large_depthwise(nn.Conv2d(8, 8, 5, groups=8, padding="same"))
    assert not is_large_depthwise(nn.Conv2d(8, 8, 5, groups=8, padding=2, padding_mode="reflect"))


def test_strided_layers_with_a_large_output_keep_aten():
    conv = nn.Conv2d(8, 8, 5, 2, 0, groups=8, bias=False)
    assert grouped_grad_pays(conv, (15, 15))  # 6x6 out
    assert not grouped_grad_pays(conv, (35, 35))  # 16x16 out: aten is faster
    assert grouped_grad_pays(nn.Conv2d(8, 8, 5, 1, 2, groups=8), (64, 64))
    use_grouped_weight_grad(conv)
    out = conv(torch.randn(2, 8, 35, 35))
    assert "GroupedWeightGradConv" not in out.grad_fn.name()
    out.sum().backward()
    assert conv.weight.grad is not None


@pytest.mark.parametrize("name,side,switched", [("mobilenet_v3_small", 64, 8), ("efficientnet_lite0", 64, 9)])
def test_encoder_trains_the_same_and_keeps_its_state_dict(name, side, switched):
    torch.manual_seed(2)
    reference = build_encoder(name).train()
    grouped = copy.deepcopy(reference)
    assert use_grouped_weight_grad(grouped) == switched
    assert list(grouped.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, side, side)
    for model in (reference, grouped):
        torch.manual_seed(3)  # the same dropout mask
        model(x).square().sum().backward()
    for (key, p), q in zip(reference.named_parameters(), grouped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=key)
    with torch.no_grad():  # inference (and ONNX export) runs nn.Conv2d's own forward
        torch.testing.assert_close(grouped.eval()(x), reference.eval()(x))
