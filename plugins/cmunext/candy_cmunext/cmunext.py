"""CMUNeXt (Tang et al., ISBI 2024): a lightweight 2D U-Net of large-kernel depthwise blocks and skip fusion.

Layout, as in the paper's figure and the authors' code: a stem (3x3 conv -> BN -> ReLU); five stages separated by
2x2 max pooling, each made of ``depth`` CMUNeXt blocks at the incoming width and an ordinary conv block (3x3 conv
-> BN -> ReLU) to the stage's width. A CMUNeXt block is a residual depthwise k x k conv -> GELU -> BN followed by
an inverted bottleneck (1x1 conv to 4x the channels -> GELU -> BN, 1x1 conv back -> GELU -> BN); note the paper's
conv -> activation -> norm order inside these blocks. The decoder upsamples bilinearly (x2) followed by an ordinary
conv block, concatenates the skip (skip first) and fuses with a Skip-Fusion block: 3x3 conv with 2 groups (one
per concatenated half) -> GELU -> BN, then 1x1 to 4x the output width -> GELU -> BN, then 1x1 to the output width
-> GELU -> BN. A 1x1 conv gives the logits. There are no deep-supervision heads.

Every conv, norm and activation is a :class:`mipcandy.LayerT` descriptor: ``conv`` (Conv2d), ``norm`` (BatchNorm2d),
``act`` (GELU, inside CMUNeXt and Skip-Fusion blocks) and ``conv_act`` (ReLU, in the ordinary conv blocks).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from candy_cmunext.variants import DEFAULT_VARIANT, find_variant
from mipcandy import ConvBlock2d, LayerT

EXPANSION = 4  # inverted-bottleneck width factor of the CMUNeXt and Skip-Fusion blocks

DEFAULT_CONV = LayerT(nn.Conv2d)
DEFAULT_NORM = LayerT(nn.BatchNorm2d, num_features="in_ch")
DEFAULT_ACT = LayerT(nn.GELU)
DEFAULT_CONV_ACT = LayerT(nn.ReLU, inplace=True)


class Layers:
    """The four descriptors one network is built from; assembles the paper's two kinds of conv unit."""

    def __init__(self, conv: LayerT, norm: LayerT, act: LayerT, conv_act: LayerT) -> None:
        self.conv, self.norm, self.act, self.conv_act = conv, norm, act, conv_act

    def mixing(self, in_ch: int, out_ch: int, kernel: int, groups: int = 1) -> nn.Sequential:
        """conv -> act -> norm, the unit of CMUNeXt and Skip-Fusion blocks."""
        return nn.Sequential(self.conv.assemble(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups),
                             self.act.assemble(), self.norm.assemble(in_ch=out_ch))

    def ordinary(self, in_ch: int, out_ch: int) -> ConvBlock2d:
        """The ordinary conv block: 3x3 conv -> norm -> ReLU."""
        return ConvBlock2d(in_ch, out_ch, 3, conv=self.conv, norm=self.norm, act=self.conv_act)


class CMUNeXtBlock(nn.Module):
    """Residual large-kernel depthwise conv, then an inverted bottleneck mixing the channels."""

    def __init__(self, channels: int, kernel: int, layers: Layers) -> None:
        super().__init__()
        self.depthwise = layers.mixing(channels, channels, kernel, groups=channels)
        self.expand = layers.mixing(channels, EXPANSION * channels, 1)
        self.project = layers.mixing(EXPANSION * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.expand(x + self.depthwise(x)))


class SkipFusion(nn.Module):
    """Fuses ``cat(skip, upsampled)``: grouped 3x3 conv (one group per half), then an inverted bottleneck."""

    def __init__(self, channels: int, layers: Layers) -> None:
        super().__init__()
        self.grouped = layers.mixing(2 * channels, 2 * channels, 3, groups=2)
        self.expand = layers.mixing(2 * channels, EXPANSION * channels, 1)
        self.project = layers.mixing(EXPANSION * channels, channels, 1)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return self.project(self.expand(self.grouped(torch.cat((skip, up), dim=1))))


class CMUNeXt(nn.Module):
    """CMUNeXt; prefer :func:`make_cmunext2d`, which validates the arguments and knows the paper's variants.

    ``forward`` maps ``(B, in_ch, H, W)`` to ``(B, num_classes, H, W)``; H and W must be multiples of
    ``divisibility`` (2 to the number of poolings); wrap the network in ``mipcandy.PaddedNetwork`` for other sizes.
    """

    def __init__(self, in_ch: int, num_classes: int, *, dims: Sequence[int], depths: Sequence[int],
                 kernels: Sequence[int], layers: Layers) -> None:
        super().__init__()
        self.num_stages = len(dims)
        self.stem = layers.ordinary(in_ch, dims[0])
        self.pool = nn.MaxPool2d(2)
        widths = [dims[0], *dims[:-1]]  # each stage's blocks run at the incoming width
        self.encoder = nn.ModuleList(
            nn.Sequential(*(CMUNeXtBlock(width, kernel, layers) for _ in range(depth)), layers.ordinary(width, dim))
            for width, dim, depth, kernel in zip(widths, dims, depths, kernels, strict=True))
        deep_to_shallow = range(self.num_stages - 1, 0, -1)
        self.ups = nn.ModuleList(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"),
                                               layers.ordinary(dims[s], dims[s - 1])) for s in deep_to_shallow)
        self.fusions = nn.ModuleList(SkipFusion(dims[s - 1], layers) for s in deep_to_shallow)
        self.head = nn.Conv2d(dims[0], num_classes, 1)

    @property
    def divisibility(self) -> int:
        """The factor H and W must be multiples of."""
        return 2 ** (self.num_stages - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[2] % self.divisibility or x.shape[3] % self.divisibility:
            raise ValueError(f"CMUNeXt expects a batch (B, C, H, W) with H and W multiples of {self.divisibility}; "
                             f"got {tuple(x.shape)}. Wrap it: PaddedNetwork(net, Pad2d({self.divisibility}))")
        skips = []
        x = self.stem(x)
        for i, stage in enumerate(self.encoder):
            x = stage(self.pool(x) if i else x)
            skips.append(x)
        x = skips.pop()
        for up, fusion in zip(self.ups, self.fusions, strict=True):
            x = fusion(skips.pop(), up(x))
        return self.head(x)


def _per_stage(option: str, values: Any, num_stages: int | None) -> tuple[int, ...]:
    """A list of positive ints, one per stage (as many as ``dims``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"make_cmunext2d: {option} must be a list of positive integers, got {values!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"make_cmunext2d: {option} must hold positive integers, got {list(values)}")
    if num_stages is not None and len(values) != num_stages:
        raise ValueError(f"make_cmunext2d: {option} needs one entry per stage ({num_stages}, as many as dims), "
                         f"got {list(values)}")
    return tuple(values)


def _layer(option: str, value: Any, default: LayerT) -> LayerT:
    if value is None:
        return default
    if not isinstance(value, LayerT):
        raise ValueError(f"make_cmunext2d: {option} must be a mipcandy.LayerT or None for the default, got {value!r}")
    return value


def make_cmunext2d(in_ch: int, num_classes: int, *, variant: str = DEFAULT_VARIANT,
                   dims: Sequence[int] | None = None, depths: Sequence[int] | None = None,
                   kernels: Sequence[int] | None = None, conv: LayerT | None = None, norm: LayerT | None = None,
                   act: LayerT | None = None, conv_act: LayerT | None = None, **unknown: Any) -> CMUNeXt:
    """CMUNeXt of a paper ``variant`` ("CMUNeXt-S", "CMUNeXt" or "CMUNeXt-L", case-insensitive).

    ``dims``, ``depths`` and ``kernels`` (one entry per stage, at least 2 stages; kernels odd) replace the
    variant's. ``conv``, ``norm``, ``act`` and ``conv_act`` are LayerT descriptors replacing Conv2d, BatchNorm2d
    (given the channels through the ``"in_ch"`` placeholder), GELU and ReLU. Unknown options raise ValueError.
    """
    if unknown:
        raise ValueError(f"make_cmunext2d: unknown option(s) {sorted(unknown)}; the options are variant, dims, "
                         f"depths, kernels, conv, norm, act and conv_act")
    for name, value in (("in_ch", in_ch), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"make_cmunext2d: {name} must be a positive integer, got {value!r}")
    chosen = find_variant(variant)
    stage_dims = _per_stage("dims", chosen.dims if dims is None else dims, None)
    if len(stage_dims) < 2:
        raise ValueError(f"make_cmunext2d: dims must list at least 2 stages, got {list(stage_dims)}")
    n = len(stage_dims)
    stage_depths = _per_stage("depths", chosen.depths if depths is None else depths, n)
    stage_kernels = _per_stage("kernels", chosen.kernels if kernels is None else kernels, n)
    if any(k % 2 == 0 for k in stage_kernels):
        raise ValueError(f"make_cmunext2d: kernels must be odd so the depthwise convs keep the size, "
                         f"got {list(stage_kernels)}")
    layers = Layers(_layer("conv", conv, DEFAULT_CONV), _layer("norm", norm, DEFAULT_NORM),
                    _layer("act", act, DEFAULT_ACT), _layer("conv_act", conv_act, DEFAULT_CONV_ACT))
    return CMUNeXt(in_ch, num_classes, dims=stage_dims, depths=stage_depths, kernels=stage_kernels, layers=layers)
