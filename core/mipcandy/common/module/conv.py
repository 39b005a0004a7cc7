"""Convolution blocks (conv -> norm -> act) whose three parts are LayerT descriptors, and weight-standardized
convolutions to use as their ``conv`` part."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mipcandy.layer import LayerT

IntOrSeq = int | Sequence[int]


def same_padding(kernel_size: IntOrSeq, dilation: IntOrSeq = 1) -> int | tuple[int, ...]:
    """Padding that keeps the size at stride 1 (and halves it exactly at stride 2) for odd kernels."""
    if isinstance(kernel_size, int) and isinstance(dilation, int):
        return dilation * (kernel_size - 1) // 2
    dims = len(kernel_size) if not isinstance(kernel_size, int) else len(dilation)  # type: ignore[arg-type]
    ks = [kernel_size] * dims if isinstance(kernel_size, int) else list(kernel_size)
    ds = [dilation] * dims if isinstance(dilation, int) else list(dilation)
    return tuple(d * (k - 1) // 2 for k, d in zip(ks, ds, strict=True))


class _WeightStandardized:
    """Weight Standardization (Qiao et al., 2019, "Micro-Batch Training with Batch-Channel Normalization and
    Weight Standardization"): every output filter's weights are shifted to mean 0 and scaled to variance 1 before
    the convolution, ``W_hat = (W - mean) / sqrt(var + eps)`` over (in_channels, *kernel), with the biased
    variance of the paper's equation and eps 1e-5.

    It smooths the loss landscape so that small-batch training with GroupNorm matches BatchNorm, which is the
    usual regime of 3D segmentation. The stored parameter stays the raw weight; padding modes work as in the
    plain convolution.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, *args: Any, eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        """The weight the convolution uses."""
        dims = tuple(range(1, self.weight.ndim))
        variance, mean = torch.var_mean(self.weight, dim=dims, correction=0, keepdim=True)
        return (self.weight - mean) * torch.rsqrt(variance + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"  # type: ignore[misc]


class WSConv2d(_WeightStandardized, nn.Conv2d):
    """``nn.Conv2d`` with Weight Standardization; same arguments plus ``eps``. Use as ``conv=LayerT(WSConv2d)``."""


class WSConv3d(_WeightStandardized, nn.Conv3d):
    """``nn.Conv3d`` with Weight Standardization; same arguments plus ``eps``. Use as ``conv=LayerT(WSConv3d)``."""


class _ConvBlock(nn.Module):
    """conv -> norm -> act. The dimension-specific subclasses only choose the default descriptors.

    ``conv`` is assembled with ``(in_ch, out_ch, kernel_size)`` positionally plus the conv keywords,
    ``norm`` with the placeholder keyword ``in_ch=out_ch``, and ``act`` with nothing. Pass ``norm=None`` or
    ``act=None`` to leave that part out. The default padding keeps the spatial size ("same" for odd kernels)
    rather than 0, because that is what segmentation networks want.
    """

    default_conv: LayerT
    default_norm: LayerT
    default_act: LayerT = LayerT(nn.ReLU, inplace=True)

    def __init__(self, in_ch: int, out_ch: int, kernel_size: IntOrSeq, *, stride: IntOrSeq = 1,
                 padding: IntOrSeq | str | None = None, dilation: IntOrSeq = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", conv: LayerT | None = None, norm: LayerT | None | bool = True,
                 act: LayerT | None | bool = True) -> None:
        super().__init__()
        padding = same_padding(kernel_size, dilation) if padding is None else padding
        self.conv = (conv or self.default_conv).assemble(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                                        dilation=dilation, groups=groups, bias=bias,
                                                        padding_mode=padding_mode)
        norm_t = self.default_norm if norm is True else norm or None
        act_t = self.default_act if act is True else act or None
        self.norm = norm_t.assemble(in_ch=out_ch) if norm_t is not None else nn.Identity()
        self.act = act_t.assemble() if act_t is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvBlock2d(_ConvBlock):
    """2D conv -> BatchNorm2d -> ReLU by default."""

    default_conv = LayerT(nn.Conv2d)
    default_norm = LayerT(nn.BatchNorm2d, num_features="in_ch")


class ConvBlock3d(_ConvBlock):
    """3D conv -> BatchNorm3d -> ReLU by default."""

    default_conv = LayerT(nn.Conv3d)
    default_norm = LayerT(nn.BatchNorm3d, num_features="in_ch")
