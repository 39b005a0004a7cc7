"""Weight-standardized convolutions against the formula of Qiao et al. (2019), alone and inside conv blocks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mipcandy import ConvBlock2d, ConvBlock3d, LayerT, WSConv2d, WSConv3d


def standardized(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """W_hat[i] = (W[i] - mean(W[i])) / sqrt(var(W[i]) + eps) per output filter i, computed with NumPy."""
    w = weight.detach().double().numpy().reshape(weight.shape[0], -1)
    mean = w.mean(axis=1, keepdims=True)
    var = ((w - mean) ** 2).mean(axis=1, keepdims=True)
    return torch.from_numpy(((w - mean) / np.sqrt(var + eps)).reshape(weight.shape)).to(weight.dtype)


def test_2d_matches_the_formula() -> None:
    torch.manual_seed(0)
    conv = WSConv2d(3, 5, 3, padding=1, bias=True)
    x = torch.randn(2, 3, 9, 10)
    expected = F.conv2d(x, standardized(conv.weight), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
    per_filter = conv.standardized_weight().detach().flatten(1)
    torch.testing.assert_close(per_filter.mean(1), torch.zeros(5), atol=1e-6, rtol=0)


def test_3d_matches_the_formula_with_groups_stride_and_eps() -> None:
    torch.manual_seed(1)
    conv = WSConv3d(4, 6, (1, 3, 3), stride=2, groups=2, bias=False, eps=1e-3)
    x = torch.randn(1, 4, 5, 8, 8)
    expected = F.conv3d(x, standardized(conv.weight, 1e-3), None, stride=2, groups=2)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_padding_mode_is_honoured() -> None:
    torch.manual_seed(2)
    conv = WSConv2d(1, 2, 3, padding=1, padding_mode="reflect")
    x = torch.randn(1, 1, 6, 6)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), standardized(conv.weight), conv.bias)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("block", "conv_type", "shape"), [(ConvBlock2d, WSConv2d, (2, 3, 8, 8)),
                                                          (ConvBlock3d, WSConv3d, (2, 3, 4, 8, 8))])
def test_usable_as_the_conv_of_a_block(block: type[nn.Module], conv_type: type[nn.Module],
                                       shape: tuple[int, ...]) -> None:
    torch.manual_seed(3)
    net = block(3, 4, 3, conv=LayerT(conv_type, eps=1e-4), norm=LayerT(nn.GroupNorm, num_groups=2,
                                                                       num_channels="in_ch"))
    assert isinstance(net.conv, conv_type) and net.conv.eps == 1e-4
    x = torch.randn(*shape)
    out = net(x)
    assert out.shape == (2, 4, *shape[2:])
    out.sum().backward()
    assert net.conv.weight.grad is not None and torch.isfinite(net.conv.weight.grad).all()
    assert "eps=0.0001" in repr(net.conv)
