"""UNet++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018).

Nodes ``X[i, j]`` sit at resolution level ``i`` (1/2^i of the input, ``features[i]`` channels) and column ``j``.
Column 0 is the encoder: ``X[i, 0] = H(maxpool(X[i-1, 0]))``. Every other node is a dense skip pathway (the
paper's equation 1): ``X[i, j] = H([X[i, 0], ..., X[i, j-1], U(X[i+1, j-1])])``, where ``U`` is a transposed
convolution (kernel 2, stride 2) to ``features[i]`` channels and ``H`` is two 3x3 conv blocks. A 1x1 head on
each top node ``X[0, 1..L]`` gives logits at full resolution; without deep supervision the network answers with
the last one, ``X[0, L]``.

Widths are the paper's (32, 64, 128, 256, 512: 4 poolings). The blocks differ from the 2018 paper's Keras code
(3x3 conv -> ELU -> dropout 0.5, no normalization): by default each is conv -> InstanceNorm -> LeakyReLU(0.01)
without dropout, the block the core's nnU-Net training recipe is tuned for (MONAI's BasicUNetPlusPlus normalizes
too). ``norm=False, act=LayerT(nn.ELU), dropout=0.5`` gives the paper's block back.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mipcandy import ConvBlock2d, ConvBlock3d, LayerT

_BLOCKS: dict[int, type[ConvBlock2d] | type[ConvBlock3d]] = {2: ConvBlock2d, 3: ConvBlock3d}
_TRANSPOSED: dict[int, type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]] = {2: nn.ConvTranspose2d,
                                                                              3: nn.ConvTranspose3d}
_POOLS: dict[int, type[nn.MaxPool2d] | type[nn.MaxPool3d]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_INSTANCE_NORMS: dict[int, type[nn.InstanceNorm2d] | type[nn.InstanceNorm3d]] = {2: nn.InstanceNorm2d,
                                                                                3: nn.InstanceNorm3d}
PAPER_FEATURES = (32, 64, 128, 256, 512)  # Table 1 of the paper: kernels of X[0..4, *]


def default_norm(ndim: int) -> LayerT:
    """Affine InstanceNorm with eps 1e-5, as nnU-Net normalizes."""
    return LayerT(_INSTANCE_NORMS[ndim], num_features="in_ch", eps=1e-5, affine=True)


def default_act() -> LayerT:
    """LeakyReLU with slope 0.01, in place."""
    return LayerT(nn.LeakyReLU, negative_slope=0.01, inplace=True)


def init_he_normal(module: nn.Module) -> None:
    """He-normal convolution weights and zero biases (the paper's Keras ``he_normal``)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def node_name(level: int, column: int) -> str:
    """The key of node ``X[level, column]`` in ``nodes`` and ``ups``."""
    return f"{level}_{column}"


class UNetPlusPlus(nn.Module):
    """A UNet++ of ``len(features)`` levels; prefer :func:`make_unetpp2d` / :func:`make_unetpp3d`.

    Implements ``mipcandy.DeepSupervisedNetwork``: off (the default), ``forward`` returns the logits of the last
    head ``(B, num_classes, *spatial)``; on, a list of every head's logits, all at FULL resolution, the final node
    ``X[0, L]`` first, then ``X[0, L-1]`` ... ``X[0, 1]``. Spatial sizes must be multiples of ``divisibility``.
    """

    def __init__(self, in_ch: int, num_classes: int, *, features: Sequence[int], ndim: int, dropout: float,
                 conv: LayerT, norm: LayerT | bool, act: LayerT | bool) -> None:
        super().__init__()
        self.ndim = ndim
        self.depth = len(features) - 1
        self.deep_supervision = False
        block = _BLOCKS[ndim]

        def convolutions(node_in: int, node_out: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for block_in in (node_in, node_out):
                layers.append(block(block_in, node_out, 3, conv=conv, norm=norm, act=act))
                if dropout:
                    layers.append(nn.Dropout(dropout))
            return nn.Sequential(*layers)

        self.pool = _POOLS[ndim](2)
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for column in range(self.depth + 1):
            for level in range(self.depth + 1 - column):
                name = node_name(level, column)
                if column == 0:
                    self.nodes[name] = convolutions(in_ch if level == 0 else features[level - 1], features[level])
                else:
                    self.ups[name] = _TRANSPOSED[ndim](features[level + 1], features[level], 2, stride=2)
                    self.nodes[name] = convolutions((column + 1) * features[level], features[level])
        self.heads = nn.ModuleList(conv.assemble(features[0], num_classes, 1) for _ in range(self.depth))
        self.apply(init_he_normal)

    @property
    def divisibility(self) -> int:
        """The factor every spatial size must be a multiple of (one halving per level)."""
        return 2 ** self.depth

    def set_deep_supervision(self, enabled: bool) -> None:
        """Return every head's logits (``True``) or only the final node's (``False``)."""
        self.deep_supervision = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.ndim + 2 or any(s % self.divisibility for s in x.shape[2:]):
            raise ValueError(
                f"UNet++ expects a batch shaped (B, C, {', '.join('*' * self.ndim)}) with spatial sizes divisible by "
                f"{self.divisibility} ({self.depth} poolings); got {tuple(x.shape)}. Pad the input first: "
                f"mipcandy.PaddedNetwork(net, mipcandy.Pad{self.ndim}d({self.divisibility}))")
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for column in range(self.depth + 1):
            for level in range(self.depth + 1 - column):
                name = node_name(level, column)
                if column == 0:
                    inputs = x if level == 0 else self.pool(grid[level - 1, 0])
                else:
                    upsampled = self.ups[name](grid[level + 1, column - 1])
                    inputs = torch.cat([*(grid[level, k] for k in range(column)), upsampled], dim=1)
                grid[level, column] = self.nodes[name](inputs)
        if not self.deep_supervision:
            return self.heads[-1](grid[0, self.depth])
        return [self.heads[column - 1](grid[0, column]) for column in range(self.depth, 0, -1)]


def _positive_int(name: str, option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {option} must be a positive integer, got {value!r}")
    return value


def _layers(name: str, ndim: int, conv: Any, norm: Any, act: Any) -> dict[str, Any]:
    """The conv, norm and act descriptors with the defaults filled in (``norm``/``act`` may be False: left out)."""
    given = {"conv": conv, "norm": norm, "act": act}
    for option, value in given.items():
        if value is not None and not isinstance(value, LayerT) and not (value is False and option != "conv"):
            leave_out = "" if option == "conv" else " or False to leave it out"
            raise ValueError(f"{name}: {option} must be a LayerT, None for the default{leave_out}; got {value!r}")
    defaults = {"conv": _BLOCKS[ndim].default_conv, "norm": default_norm(ndim), "act": default_act()}
    return {option: defaults[option] if value is None else value for option, value in given.items()}


def _make_unetpp(name: str, ndim: int, in_ch: int, num_classes: int, features: Any, dropout: Any,
                 conv: LayerT | None, norm: LayerT | bool | None, act: LayerT | bool | None,
                 unknown: dict[str, Any]) -> UNetPlusPlus:
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; the options are features, dropout, conv, "
                         f"norm and act (deep supervision is switched with set_deep_supervision, not an option)")
    _positive_int(name, "in_ch", in_ch)
    _positive_int(name, "num_classes", num_classes)
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence) or len(features) < 2:
        raise ValueError(f"{name}: features must list the channels of at least 2 levels (the paper: "
                         f"{list(PAPER_FEATURES)}), got {features!r}")
    widths = tuple(_positive_int(name, f"features[{i}]", f) for i, f in enumerate(features))
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"{name}: dropout must be a number in [0, 1) (the paper: 0.5), got {dropout!r}")
    return UNetPlusPlus(in_ch, num_classes, features=widths, ndim=ndim, dropout=float(dropout),
                        **_layers(name, ndim, conv, norm, act))


def make_unetpp2d(in_ch: int, num_classes: int, *, features: Sequence[int] = PAPER_FEATURES, dropout: float = 0.0,
                  conv: LayerT | None = None, norm: LayerT | bool | None = None, act: LayerT | bool | None = None,
                  **unknown: Any) -> UNetPlusPlus:
    """The paper's 2D UNet++ (5 levels, 32 -> 512 channels), deep supervision off.

    ``features`` gives one width per level (its length - 1 poolings); ``dropout`` follows each conv block.
    ``conv``, ``norm`` and ``act`` are LayerT descriptors replacing Conv2d, InstanceNorm2d and LeakyReLU
    (``norm``/``act`` ``False`` leave them out; ``norm`` receives the channel count through the ``"in_ch"``
    placeholder). Unknown options raise ValueError.
    """
    return _make_unetpp("make_unetpp2d", 2, in_ch, num_classes, features, dropout, conv, norm, act, unknown)


def make_unetpp3d(in_ch: int, num_classes: int, *, features: Sequence[int] = PAPER_FEATURES, dropout: float = 0.0,
                  conv: LayerT | None = None, norm: LayerT | bool | None = None, act: LayerT | bool | None = None,
                  **unknown: Any) -> UNetPlusPlus:
    """UNet++ with 3D convolutions and the paper's widths; arguments as :func:`make_unetpp2d`."""
    return _make_unetpp("make_unetpp3d", 3, in_ch, num_classes, features, dropout, conv, norm, act, unknown)
