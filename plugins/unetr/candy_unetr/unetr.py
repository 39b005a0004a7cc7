"""UNETR (Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image Segmentation", WACV 2022), 2D and 3D.

A ViT encoder (patch 16; ViT-B by default: hidden 768, MLP 3072, 12 heads, 12 layers) reads the image as a
sequence of patches. As the paper writes, the outputs ``z_3``, ``z_6``, ``z_9`` and ``z_12`` of transformer layers
3, 6, 9 and 12 (1-based; with another depth ``L``: ``L/4``, ``L/2``, ``3L/4``, ``L``) are reshaped onto the
patch grid and brought back to 1/2, 1/4 and 1/8 of the input size by 3, 2 and 1 transposed convolutions (the
first two paths with a residual conv block after each upsampling but the first), and ``z_12`` is the bottleneck.
The decoder upsamples it four times (transposed conv kernel 2), concatenating a skip each time and applying a
residual conv block; the last skip is a residual conv block on the input itself. Widths are ``feature_size`` (16)
times 1, 2, 4 and 8. A 1x1 convolution gives the logits.

The blocks follow the authors' reference code (MONAI's UNETR with ``res_block=True``): conv k3 without bias ->
InstanceNorm (not affine) -> LeakyReLU(0.01) -> conv k3 -> InstanceNorm, plus a 1x1 conv + norm shortcut where
the width changes, then LeakyReLU; transposed convolutions have no bias. MONAI takes its skips from layers 4, 7
and 10 (it indexes a 0-based list with 3, 6, 9); we follow the paper's numbering. The weights are those of MONAI's
model less the cross-attention norms it builds without using them.

The position embedding fixes the patch grid, so a network accepts exactly the image size it was built for:
pad smaller inputs up to it with ``mipcandy.PaddedNetwork(net, mipcandy.PadTo(net.img_size))``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from candy_unetr.vit import ViTEncoder
from mipcandy import ConvBlock2d, ConvBlock3d, LayerT

PATCH = 16

_BLOCKS: dict[int, type[ConvBlock2d] | type[ConvBlock3d]] = {2: ConvBlock2d, 3: ConvBlock3d}
_TRANSPOSED: dict[int, type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]] = {2: nn.ConvTranspose2d,
                                                                              3: nn.ConvTranspose3d}
_INSTANCE_NORMS: dict[int, type[nn.InstanceNorm2d] | type[nn.InstanceNorm3d]] = {2: nn.InstanceNorm2d,
                                                                                3: nn.InstanceNorm3d}


def default_norm(ndim: int) -> LayerT:
    """The reference decoder's normalisation: InstanceNorm without affine parameters."""
    return LayerT(_INSTANCE_NORMS[ndim], num_features="in_ch")


def default_act() -> LayerT:
    """The reference decoder's nonlinearity: LeakyReLU with slope 0.01."""
    return LayerT(nn.LeakyReLU, negative_slope=0.01, inplace=True)


class ResidualBlock(nn.Module):
    """conv -> norm -> act -> conv -> norm, plus the input (through a 1x1 conv + norm if the width changes), -> act."""

    def __init__(self, in_ch: int, out_ch: int, ndim: int, *, conv: LayerT, norm: LayerT | bool,
                 act: LayerT | bool) -> None:
        super().__init__()
        block = _BLOCKS[ndim]
        self.body = nn.Sequential(block(in_ch, out_ch, 3, bias=False, conv=conv, norm=norm, act=act),
                                  block(out_ch, out_ch, 3, bias=False, conv=conv, norm=norm, act=False))
        self.shortcut = (nn.Identity() if in_ch == out_ch
                         else block(in_ch, out_ch, 1, bias=False, conv=conv, norm=norm, act=False))
        self.act = act.assemble() if isinstance(act, LayerT) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def upsampling(in_ch: int, out_ch: int, ndim: int) -> nn.Module:
    """A transposed convolution doubling the size (kernel = stride = 2), without bias as in the reference."""
    return _TRANSPOSED[ndim](in_ch, out_ch, 2, stride=2, bias=False)


class UpBlock(nn.Module):
    """Decoder stage: upsample, concatenate the skip, residual block."""

    def __init__(self, in_ch: int, out_ch: int, ndim: int, **layers: Any) -> None:
        super().__init__()
        self.up = upsampling(in_ch, out_ch, ndim)
        self.block = ResidualBlock(2 * out_ch, out_ch, ndim, **layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat((self.up(x), skip), dim=1))


def projection(hidden_size: int, out_ch: int, ndim: int, num_upsamplings: int, **layers: Any) -> nn.Sequential:
    """A transformer skip brought ``2**num_upsamplings`` times larger; each upsampling but the first gets a block."""
    stages: list[nn.Module] = [upsampling(hidden_size, out_ch, ndim)]
    stages += [nn.Sequential(upsampling(out_ch, out_ch, ndim), ResidualBlock(out_ch, out_ch, ndim, **layers))
               for _ in range(num_upsamplings - 1)]
    return nn.Sequential(*stages)


class UNETR(nn.Module):
    """UNETR for inputs of exactly ``img_size``; prefer :func:`make_unetr2d` / :func:`make_unetr3d`."""

    def __init__(self, in_ch: int, num_classes: int, *, img_size: Sequence[int], hidden_size: int, mlp_dim: int,
                 num_heads: int, num_layers: int, feature_size: int, dropout: float, qkv_bias: bool, conv: LayerT,
                 norm: LayerT | bool, act: LayerT | bool) -> None:
        super().__init__()
        self.img_size = tuple(img_size)
        self.ndim = len(self.img_size)
        self.in_ch = in_ch
        taps = [num_layers * quarter // 4 for quarter in (1, 2, 3, 4)]  # layers 3, 6, 9 and 12 of 12
        self.vit = ViTEncoder(in_ch, self.img_size, patch=PATCH, hidden_size=hidden_size, mlp_dim=mlp_dim,
                              num_heads=num_heads, num_layers=num_layers, taps=taps, qkv_bias=qkv_bias,
                              dropout=dropout)
        n, f = self.ndim, feature_size
        layers = {"conv": conv, "norm": norm, "act": act}
        self.input_block = ResidualBlock(in_ch, f, n, **layers)
        self.projections = nn.ModuleList(projection(hidden_size, f * width, n, ups, **layers)
                                         for width, ups in ((2, 3), (4, 2), (8, 1)))
        self.decoder = nn.ModuleList(UpBlock(c_in, c_out, n, **layers)
                                     for c_in, c_out in ((hidden_size, 8 * f), (8 * f, 4 * f), (4 * f, 2 * f),
                                                         (2 * f, f)))
        self.head = conv.assemble(f, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.ndim + 2 or tuple(x.shape[2:]) != self.img_size or x.shape[1] != self.in_ch:
            raise ValueError(
                f"UNETR was built for inputs shaped (B, {self.in_ch}, {', '.join(map(str, self.img_size))}): its "
                f"position embedding fixes the grid of {PATCH}-voxel patches. Got {tuple(x.shape)}. Pad smaller "
                f"inputs with mipcandy.PaddedNetwork(net, mipcandy.PadTo({self.img_size})), or build the network "
                f"for the new size")
        *skips, bottleneck = (self.vit.to_feature_map(tokens) for tokens in self.vit(x))
        features = [self.input_block(x), *(project(z) for project, z in zip(self.projections, skips, strict=True))]
        out = bottleneck
        for stage, skip in zip(self.decoder, reversed(features), strict=True):
            out = stage(out, skip)
        return self.head(out)


def _positive_int(name: str, option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {option} must be a positive integer, got {value!r}")
    return value


def _image_size(name: str, img_size: Any, ndim: int) -> tuple[int, ...]:
    if isinstance(img_size, (str, bytes)) or not isinstance(img_size, Sequence) or len(img_size) != ndim:
        raise ValueError(f"{name}: img_size must hold {ndim} sizes, got {img_size!r}")
    size = tuple(_positive_int(name, "img_size", s) for s in img_size)
    if any(s % PATCH for s in size):
        fitted = tuple(-(-s // PATCH) * PATCH for s in size)
        raise ValueError(
            f"{name}: image size {size} is not a multiple of the patch size {PATCH} on every axis. Choose a patch "
            f"(image) size that is, e.g. {fitted}, and pad inputs up to it with mipcandy.PaddedNetwork(net, "
            f"mipcandy.Pad{ndim}d({PATCH})) (inputs of size {size} become {fitted})")
    return size


def _layers(name: str, ndim: int, conv: Any, norm: Any, act: Any) -> dict[str, Any]:
    """The conv, norm and act descriptors with the defaults filled in (``norm``/``act`` may be False: left out)."""
    given = {"conv": conv, "norm": norm, "act": act}
    for option, value in given.items():
        if value is not None and not isinstance(value, LayerT) and not (value is False and option != "conv"):
            leave_out = "" if option == "conv" else " or False to leave it out"
            raise ValueError(f"{name}: {option} must be a LayerT, None for the default{leave_out}; got {value!r}")
    defaults = {"conv": _BLOCKS[ndim].default_conv, "norm": default_norm(ndim), "act": default_act()}
    return {option: defaults[option] if value is None else value for option, value in given.items()}


def _make_unetr(name: str, ndim: int, in_ch: int, num_classes: int, img_size: Any, hidden_size: int, mlp_dim: int,
                num_heads: int, num_layers: int, feature_size: int, dropout: float, qkv_bias: bool,
                conv: LayerT | None, norm: LayerT | bool | None, act: LayerT | bool | None,
                unknown: dict[str, Any]) -> UNETR:
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; the options are hidden_size, mlp_dim, "
                         f"num_heads, num_layers, feature_size, dropout, qkv_bias, conv, norm and act")
    for option, value in (("in_ch", in_ch), ("num_classes", num_classes), ("hidden_size", hidden_size),
                          ("mlp_dim", mlp_dim), ("num_heads", num_heads), ("num_layers", num_layers),
                          ("feature_size", feature_size)):
        _positive_int(name, option, value)
    size = _image_size(name, img_size, ndim)
    if hidden_size % num_heads:
        raise ValueError(f"{name}: hidden_size {hidden_size} must be divisible by num_heads {num_heads} (each head "
                         f"gets hidden_size / num_heads features)")
    if num_layers % 4:
        raise ValueError(f"{name}: num_layers must be a multiple of 4 (the skips leave after layers L/4, L/2, 3L/4 "
                         f"and L; the paper uses 12), got {num_layers}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"{name}: dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(qkv_bias, bool):
        raise ValueError(f"{name}: qkv_bias must be True or False, got {qkv_bias!r}")
    return UNETR(in_ch, num_classes, img_size=size, hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads,
                 num_layers=num_layers, feature_size=feature_size, dropout=float(dropout), qkv_bias=qkv_bias,
                 **_layers(name, ndim, conv, norm, act))


def make_unetr3d(in_ch: int, num_classes: int, *, img_size: Sequence[int], hidden_size: int = 768,
                 mlp_dim: int = 3072, num_heads: int = 12, num_layers: int = 12, feature_size: int = 16,
                 dropout: float = 0.0, qkv_bias: bool = False, conv: LayerT | None = None,
                 norm: LayerT | bool | None = None, act: LayerT | bool | None = None, **unknown: Any) -> UNETR:
    """The paper's 3D UNETR (ViT-B encoder, feature size 16) for inputs of exactly ``img_size`` (D, H, W).

    Every size must be a multiple of 16 (the patch). ``conv``, ``norm`` and ``act`` are LayerT descriptors
    replacing the decoder's Conv3d, InstanceNorm3d and LeakyReLU (``norm``/``act`` ``False`` leave them out;
    ``norm`` receives the channel count through the ``"in_ch"`` placeholder). Unknown options raise ValueError.
    """
    return _make_unetr("make_unetr3d", 3, in_ch, num_classes, img_size, hidden_size, mlp_dim, num_heads, num_layers,
                       feature_size, dropout, qkv_bias, conv, norm, act, unknown)


def make_unetr2d(in_ch: int, num_classes: int, *, img_size: Sequence[int], hidden_size: int = 768,
                 mlp_dim: int = 3072, num_heads: int = 12, num_layers: int = 12, feature_size: int = 16,
                 dropout: float = 0.0, qkv_bias: bool = False, conv: LayerT | None = None,
                 norm: LayerT | bool | None = None, act: LayerT | bool | None = None, **unknown: Any) -> UNETR:
    """UNETR on 16x16 patches of 2D inputs of exactly ``img_size`` (H, W); arguments as :func:`make_unetr3d`."""
    return _make_unetr("make_unetr2d", 2, in_ch, num_classes, img_size, hidden_size, mlp_dim, num_heads, num_layers,
                       feature_size, dropout, qkv_bias, conv, norm, act, unknown)
