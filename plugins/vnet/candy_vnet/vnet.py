"""V-Net (Milletari, Navab and Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
Segmentation", 3DV 2016), 3D, built from LayerT descriptors.

Layout (the paper's Fig. 1 and the authors' Caffe prototxt): an input stage, one 5x5x5 conv to 16 channels to
which the input, tiled to 16 channels, is added; four down stages, each a 2x2x2 stride-2 conv that doubles the
channels followed by 1, 2, 3 and 3 residual 5x5x5 convs (32, 64, 128, 256 channels); four up stages mirroring
them, each a 2x2x2 stride-2 transposed conv to the skip's channel count, concatenated with the skip, followed by
3, 2, 1 and 1 residual 5x5x5 convs (256, 128, 64, 32 channels); then a 5x5x5 conv to the classes and a 1x1x1
conv. In every residual stage the stage input is added to the last conv's output and the sum goes through the
nonlinearity (the paper's "residual function").

The paper uses PReLU and no normalisation. BatchNorm is on by default here, as in MONAI's and most PyTorch
V-Nets (``norm=False`` gives the paper's network); convs carry a bias only where no normalisation follows them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mipcandy import ConvBlock3d, LayerT

KERNEL = 5
ACTIVATIONS: dict[str, LayerT] = {"prelu": LayerT(nn.PReLU), "elu": LayerT(nn.ELU)}
TRANSPOSED = LayerT(nn.ConvTranspose3d)


def default_norm() -> LayerT:
    """BatchNorm3d over the channels (MONAI's V-Net normalisation)."""
    return LayerT(nn.BatchNorm3d, num_features="in_ch")


class ResidualConvs(nn.Module):
    """``num_convs`` 5x5x5 conv -> norm -> act units at ``channels``; the input is added to the last unit's
    output before its nonlinearity."""

    def __init__(self, channels: int, num_convs: int, norm: LayerT | bool, act: LayerT) -> None:
        super().__init__()
        self.convs = nn.Sequential(*(ConvBlock3d(channels, channels, KERNEL, bias=norm is False, norm=norm,
                                                 act=act if i < num_convs - 1 else False)
                                     for i in range(num_convs)))
        self.act = act.assemble()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.convs(x))


class InputStage(nn.Module):
    """One 5x5x5 conv from the input channels to ``channels``, plus the input tiled to ``channels``."""

    def __init__(self, in_ch: int, channels: int, norm: LayerT | bool, act: LayerT) -> None:
        super().__init__()
        self.conv = ConvBlock3d(in_ch, channels, KERNEL, bias=norm is False, norm=norm, act=False)
        self.act = act.assemble()
        self.channels, self.repeats = channels, math.ceil(channels / in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tiled = x.repeat(1, self.repeats, 1, 1, 1)[:, :self.channels]
        return self.act(self.conv(x) + tiled)


class UpStage(nn.Module):
    """Transposed conv to the skip's channels, concatenation with the skip, then residual convs."""

    def __init__(self, in_ch: int, skip_ch: int, num_convs: int, norm: LayerT | bool, act: LayerT) -> None:
        super().__init__()
        self.up = ConvBlock3d(in_ch, skip_ch, 2, stride=2, padding=0, bias=norm is False, conv=TRANSPOSED,
                              norm=norm, act=act)
        self.convs = ResidualConvs(2 * skip_ch, num_convs, norm, act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat((self.up(x), skip), dim=1))


class VNet(nn.Module):
    """The V-Net; prefer :func:`make_vnet3d`, which validates arguments.

    ``forward`` maps ``(B, in_ch, D, H, W)`` to ``(B, num_classes, D, H, W)``; every spatial size must be a
    multiple of :attr:`divisibility` (``2 ** len(down_convs)``).
    """

    def __init__(self, in_ch: int, num_classes: int, *, base_ch: int, down_convs: Sequence[int],
                 up_convs: Sequence[int], norm: LayerT | bool, act: LayerT) -> None:
        super().__init__()
        depth = len(down_convs)
        chs = [base_ch * 2 ** i for i in range(depth + 1)]
        self.divisibility = 2 ** depth
        self.input_stage = InputStage(in_ch, chs[0], norm, act)
        self.down = nn.ModuleList(
            nn.Sequential(ConvBlock3d(chs[i], chs[i + 1], 2, stride=2, padding=0, bias=norm is False, norm=norm,
                                      act=act),
                          ResidualConvs(chs[i + 1], convs, norm, act))
            for i, convs in enumerate(down_convs))
        ups, current = [], chs[depth]
        for j, convs in enumerate(up_convs):  # deepest first
            skip = chs[depth - 1 - j]
            ups.append(UpStage(current, skip, convs, norm, act))
            current = 2 * skip
        self.up = nn.ModuleList(ups)
        self.head = nn.Sequential(ConvBlock3d(current, num_classes, KERNEL, bias=norm is False, norm=norm, act=act),
                                  nn.Conv3d(num_classes, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or any(s % self.divisibility for s in x.shape[2:]):
            raise ValueError(f"VNet expects a batch shaped (B, C, D, H, W) with spatial sizes divisible by "
                             f"{self.divisibility}; got {tuple(x.shape)}. Pad the input first, e.g. "
                             f"PaddedNetwork(net, Pad3d({self.divisibility}))")
        skips = [self.input_stage(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = skips.pop()
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.head(x)


def _counts(option: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"make_vnet3d: {option} must list one positive number of convs per stage, got {value!r}")
    return tuple(value)


def _activation(value: Any) -> LayerT:
    if isinstance(value, LayerT):
        return value
    if isinstance(value, str) and value.lower() in ACTIVATIONS:
        return ACTIVATIONS[value.lower()]
    raise ValueError(f"make_vnet3d: act must be one of {sorted(ACTIVATIONS)} or a LayerT, got {value!r}")


def make_vnet3d(in_ch: int, num_classes: int, *, base_ch: int = 16, down_convs: Sequence[int] = (1, 2, 3, 3),
                up_convs: Sequence[int] = (3, 2, 1, 1), act: str | LayerT = "prelu",
                norm: LayerT | bool | None = None, **unknown: Any) -> VNet:
    """The paper's V-Net: 16 -> 256 channels, 1/2/3/3 convs down and 3/2/1/1 up, PReLU.

    ``base_ch`` is the input stage's width (doubled by every down stage); ``down_convs`` and ``up_convs`` (same
    length; up stages deepest first) are the residual convs per stage, e.g. MONAI's ``(1, 2, 3, 2)`` and
    ``(2, 2, 1, 1)``. ``act`` is ``"prelu"`` (the paper), ``"elu"`` (MONAI) or a LayerT; ``norm`` a LayerT
    assembled with ``in_ch=channels``, ``None`` for BatchNorm3d or ``False`` for none (the paper).
    """
    if unknown:
        raise ValueError(f"make_vnet3d: unknown option(s) {sorted(unknown)}; the options are base_ch, down_convs, "
                         "up_convs, act and norm")
    for name, value in (("in_ch", in_ch), ("num_classes", num_classes), ("base_ch", base_ch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"make_vnet3d: {name} must be a positive integer, got {value!r}")
    down, up = _counts("down_convs", down_convs), _counts("up_convs", up_convs)
    if len(down) != len(up):
        raise ValueError(f"make_vnet3d: up_convs needs one entry per down stage ({len(down)}), got {up_convs!r}")
    if norm is not None and norm is not False and not isinstance(norm, LayerT):
        raise ValueError(f"make_vnet3d: norm must be a LayerT, None (BatchNorm3d) or False, got {norm!r}")
    return VNet(in_ch, num_classes, base_ch=base_ch, down_convs=down, up_convs=up,
                norm=default_norm() if norm is None else norm, act=_activation(act))
