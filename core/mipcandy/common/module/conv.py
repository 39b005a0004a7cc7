"""Convolution blocks (conv -> norm -> act) whose three parts are LayerT descriptors."""
from __future__ import annotations

from collections.abc import Sequence

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
