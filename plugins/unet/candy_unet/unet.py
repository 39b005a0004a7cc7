"""An nnU-Net-style plain-convolution U-Net (PlainConvUNet layout), 2D and 3D, built from LayerT descriptors.

Layout (nnU-Net v2 defaults): every stage is two conv blocks (conv k3, bias on -> InstanceNorm(eps 1e-5,
affine) -> LeakyReLU(1e-2)); the first conv of each stage after the first has the stage's stride (strided
downsampling); the decoder upsamples with a transposed conv (kernel = stride), concatenates the skip and
applies two conv blocks; every decoder stage has a 1x1 segmentation head. All heads are always built (as
nnU-Net does), so weights trained with deep supervision load into a network that runs without it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mipcandy.common.module.conv import ConvBlock2d, ConvBlock3d
from mipcandy.layer import LayerT

CONVS_PER_STAGE = 2
HE_NEGATIVE_SLOPE = 1e-2

_BLOCKS: dict[int, type[ConvBlock2d] | type[ConvBlock3d]] = {2: ConvBlock2d, 3: ConvBlock3d}
_TRANSPOSED: dict[int, type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]] = {2: nn.ConvTranspose2d,
                                                                              3: nn.ConvTranspose3d}
_INSTANCE_NORMS: dict[int, type[nn.Module]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}

Axes = tuple[int, ...]


def default_norm(ndim: int) -> LayerT:
    """nnU-Net's normalisation: affine InstanceNorm with eps 1e-5."""
    return LayerT(_INSTANCE_NORMS[ndim], num_features="in_ch", eps=1e-5, affine=True)


def default_act() -> LayerT:
    """nnU-Net's nonlinearity: LeakyReLU with slope 1e-2, in place."""
    return LayerT(nn.LeakyReLU, negative_slope=1e-2, inplace=True)


def init_he(module: nn.Module) -> None:
    """nnU-Net's InitWeights_He: Kaiming-normal conv and transposed-conv weights (a=1e-2), zero biases."""
    if isinstance(module, nn.modules.conv._ConvNd):
        nn.init.kaiming_normal_(module.weight, a=HE_NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class UNet(nn.Module):
    """A plain-convolution U-Net; prefer :func:`make_unet2d` / :func:`make_unet3d`, which validate arguments.

    ``forward`` returns ``(B, num_classes, *spatial)``, or with ``deep_supervision`` a list with one such
    output per decoder stage, full resolution first (output ``i`` is downsampled by ``output_strides[i]``).
    Switch the heads with :meth:`set_deep_supervision` (the ``DeepSupervisedNetwork`` protocol). Spatial sizes
    must be multiples of ``divisibility``.
    """

    def __init__(self, in_ch: int, num_classes: int, *, hidden_chs: Sequence[int], strides: Sequence[Axes],
                 kernel_sizes: Sequence[Axes], deep_supervision: bool, conv: LayerT, norm: LayerT | bool,
                 act: LayerT | bool) -> None:
        super().__init__()
        self.ndim = len(strides[0])
        self.num_stages = len(hidden_chs)
        self.deep_supervision = deep_supervision
        self.strides = tuple(strides)
        block = _BLOCKS[self.ndim]

        def stage(stage_in: int, stage_out: int, kernel: Axes, stride: Axes) -> nn.Sequential:
            blocks = [block(stage_in if i == 0 else stage_out, stage_out, kernel, stride=stride if i == 0 else 1,
                            conv=conv, norm=norm, act=act) for i in range(CONVS_PER_STAGE)]
            return nn.Sequential(*blocks)

        chs = [in_ch, *hidden_chs]
        self.encoder = nn.ModuleList(stage(chs[i], chs[i + 1], kernel_sizes[i], strides[i])
                                     for i in range(self.num_stages))
        # Decoder modules are indexed from the deepest stage up, in the order they run.
        deep_to_shallow = range(self.num_stages - 1, 0, -1)
        self.ups = nn.ModuleList(_TRANSPOSED[self.ndim](hidden_chs[s], hidden_chs[s - 1], strides[s], strides[s])
                                 for s in deep_to_shallow)
        self.decoder = nn.ModuleList(stage(2 * hidden_chs[s - 1], hidden_chs[s - 1], kernel_sizes[s - 1],
                                           (1,) * self.ndim) for s in deep_to_shallow)
        self.heads = nn.ModuleList(conv.assemble(hidden_chs[s - 1], num_classes, 1) for s in deep_to_shallow)
        self.apply(init_he)

    def set_deep_supervision(self, enabled: bool) -> None:
        """Return every decoder head's output (``True``) or only the full-resolution one (``False``)."""
        self.deep_supervision = bool(enabled)

    @property
    def divisibility(self) -> Axes:
        """Per spatial axis, the factor every input size must be a multiple of (product of the strides)."""
        return tuple(math.prod(axis) for axis in zip(*self.strides, strict=True))

    @property
    def output_strides(self) -> list[Axes]:
        """Per deep-supervision output (full resolution first), its downsampling factor per axis."""
        factors, current = [], (1,) * self.ndim
        for stride in self.strides[:-1]:
            current = tuple(c * s for c, s in zip(current, stride, strict=True))
            factors.append(current)
        return factors

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        spatial = tuple(x.shape[2:])
        if x.ndim != self.ndim + 2 or any(s % d for s, d in zip(spatial, self.divisibility, strict=True)):
            raise ValueError(f"UNet expects a batch shaped (B, C, {', '.join('*' * self.ndim)}) with spatial sizes "
                             f"divisible by {self.divisibility}; got {tuple(x.shape)}. Pad the input (e.g. "
                             f"Pad{self.ndim}d({self.divisibility})) first")
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, stage, head in zip(self.ups, self.decoder, self.heads, strict=True):
            x = stage(torch.cat((up(x), skips.pop()), dim=1))
            if self.deep_supervision:
                outputs.append(head(x))
        return outputs[::-1] if self.deep_supervision else self.heads[-1](x)


DEFAULT_CHANNELS = {2: (32, 64, 128, 256, 512, 512, 512), 3: (32, 64, 128, 256, 320, 320)}
MIN_FEATURE_SIZE = 4


def plan_topology(patch: Sequence[int]) -> dict[str, Any]:
    """``hidden_chs`` and per-stage ``strides`` for a patch, as nnU-Net plans them: an axis is halved while its
    feature map stays at least 4 voxels, up to the default number of stages (7 in 2D, 6 in 3D), so every planned
    patch fits the network's divisibility."""
    channels = DEFAULT_CHANNELS[len(patch)]
    pools = [max(0, int(math.floor(math.log2(size / MIN_FEATURE_SIZE)))) for size in patch]
    stages = min(len(channels), max(pools) + 1)
    strides = [[1] * len(patch)] + [[2 if stage <= p else 1 for p in pools] for stage in range(1, stages)]
    return {"hidden_chs": channels[:stages], "strides": strides}


def _positive_int(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {what} must be a positive integer, got {value!r}")
    return value


def _per_stage(name: str, option: str, value: Any, num_stages: int, ndim: int) -> list[Axes]:
    """Normalise a per-stage list whose entries are an int or one int per axis."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != num_stages:
        raise ValueError(f"{name}: {option} needs one entry per stage ({num_stages}, as many as hidden_chs), "
                         f"each an int or {ndim} ints; got {value!r}")
    result = []
    for i, entry in enumerate(value):
        axes = (entry,) * ndim if isinstance(entry, int) and not isinstance(entry, bool) else entry
        if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence) or len(axes) != ndim:
            raise ValueError(f"{name}: {option}[{i}] must be an int or {ndim} ints, got {entry!r}")
        result.append(tuple(_positive_int(name, a, f"{option}[{i}]") for a in axes))
    return result


def _descriptor(name: str, option: str, value: Any, default: LayerT, *, optional: bool) -> LayerT | bool:
    if value is None:
        return default
    if isinstance(value, LayerT) or (optional and value is False):
        return value
    allowed = "a LayerT, None for the default or False to leave it out" if optional else "a LayerT or None"
    raise ValueError(f"{name}: {option} must be {allowed}, got {value!r}")


def _make_unet(name: str, ndim: int, in_ch: int, num_classes: int, hidden_chs: Sequence[int],
               deep_supervision: bool, strides: Sequence[Any] | None, kernel_sizes: Sequence[Any] | None,
               conv: LayerT | None, norm: LayerT | bool | None, act: LayerT | bool | None,
               unknown: dict[str, Any]) -> UNet:
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; the options are hidden_chs, "
                         f"deep_supervision, strides, kernel_sizes, conv, norm and act")
    _positive_int(name, in_ch, "in_ch")
    _positive_int(name, num_classes, "num_classes")
    if isinstance(hidden_chs, (str, bytes)) or not isinstance(hidden_chs, Sequence) or len(hidden_chs) < 2:
        raise ValueError(f"{name}: hidden_chs must list the channels of at least 2 stages, got {hidden_chs!r}")
    hidden = tuple(_positive_int(name, c, f"hidden_chs[{i}]") for i, c in enumerate(hidden_chs))
    if not isinstance(deep_supervision, bool):
        raise ValueError(f"{name}: deep_supervision must be True or False, got {deep_supervision!r}")
    n = len(hidden)
    stride_axes = _per_stage(name, "strides", [1] + [2] * (n - 1) if strides is None else strides, n, ndim)
    if stride_axes[0] != (1,) * ndim:
        raise ValueError(f"{name}: strides[0] must be 1 (the first stage works at full resolution, so the output "
                         f"matches the input), got {stride_axes[0]}")
    kernel_axes = _per_stage(name, "kernel_sizes", [3] * n if kernel_sizes is None else kernel_sizes, n, ndim)
    for i, kernel in enumerate(kernel_axes):
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"{name}: kernel_sizes[{i}] = {kernel} must be odd so the convs keep the size")
    block = _BLOCKS[ndim]
    return UNet(in_ch, num_classes, hidden_chs=hidden, strides=stride_axes, kernel_sizes=kernel_axes,
                deep_supervision=deep_supervision,
                conv=_descriptor(name, "conv", conv, block.default_conv, optional=False),  # type: ignore[arg-type]
                norm=_descriptor(name, "norm", norm, default_norm(ndim), optional=True),
                act=_descriptor(name, "act", act, default_act(), optional=True))


def make_unet2d(in_ch: int, num_classes: int, *, hidden_chs: Sequence[int] = (32, 64, 128, 256, 512, 512, 512),
                deep_supervision: bool = False, strides: Sequence[int | Sequence[int]] | None = None,
                kernel_sizes: Sequence[int | Sequence[int]] | None = None, conv: LayerT | None = None,
                norm: LayerT | bool | None = None, act: LayerT | bool | None = None, **unknown: Any) -> UNet:
    """nnU-Net's 2D PlainConvUNet (7 stages, 32 -> 512 channels) by default.

    ``strides`` and ``kernel_sizes`` take one entry per stage (an int, or one int per axis for anisotropic
    data); ``strides[0]`` must be 1 and defaults to 1 then 2s. ``conv``, ``norm`` and ``act`` are LayerT
    descriptors replacing Conv2d, InstanceNorm2d and LeakyReLU (``norm``/``act`` ``False`` leaves them out;
    ``norm`` receives the channel count through the ``"in_ch"`` placeholder). Unknown options raise ValueError.
    """
    return _make_unet("make_unet2d", 2, in_ch, num_classes, hidden_chs, deep_supervision, strides, kernel_sizes,
                      conv, norm, act, unknown)


def make_unet3d(in_ch: int, num_classes: int, *, hidden_chs: Sequence[int] = (32, 64, 128, 256, 320, 320),
                deep_supervision: bool = False, strides: Sequence[int | Sequence[int]] | None = None,
                kernel_sizes: Sequence[int | Sequence[int]] | None = None, conv: LayerT | None = None,
                norm: LayerT | bool | None = None, act: LayerT | bool | None = None, **unknown: Any) -> UNet:
    """nnU-Net's 3D PlainConvUNet (6 stages, 32 -> 320 channels) by default; arguments as :func:`make_unet2d`."""
    return _make_unet("make_unet3d", 3, in_ch, num_classes, hidden_chs, deep_supervision, strides, kernel_sizes,
                      conv, norm, act, unknown)
