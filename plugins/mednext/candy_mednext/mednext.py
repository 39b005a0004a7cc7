"""MedNeXt (Roy et al., "MedNeXt: Transformer-driven Scaling of ConvNets for Medical Image Segmentation", MICCAI
2023), 2D and 3D, with norm and activation as LayerT descriptors.

A MedNeXt block is a depthwise k x k (x k) conv -> GroupNorm (one group per channel) -> 1x1 expansion by the
level's ratio -> GELU -> 1x1 compression, added to the block's input. The network has nine levels (four encoder
levels, the bottleneck, four decoder levels) of ``base_ch * (1, 2, 4, 8, 16, 8, 4, 2, 1)`` channels after a 1x1
stem. Resampling blocks are MedNeXt blocks too: down, a stride-2 depthwise conv with a stride-2 1x1 conv as
shortcut; up, a stride-2 transposed depthwise conv with a stride-2 transposed 1x1 shortcut, the sum padded by
one voxel at the start of every axis (as the official implementation does). A resampling block belongs to the
level it leads into and takes that level's expansion ratio. Skips are added, not concatenated. Every decoder
level and the bottleneck have a 1x1 head for deep supervision.

Variants (the paper's Table 1 and the official ``create_mednext_v1.py``, MIC-DKFZ/MedNeXt): expansion ratios and
block counts per level; M and L were trained with gradient checkpointing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mipcandy import LayerT

LEVELS = 9
DEPTH = 4  # down (and up) blocks; inputs must be multiples of 2 ** DEPTH
_CONVS: dict[int, type[nn.Conv2d] | type[nn.Conv3d]] = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED: dict[int, type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]] = {2: nn.ConvTranspose2d,
                                                                              3: nn.ConvTranspose3d}


@dataclass(frozen=True)
class Variant:
    """Per level (encoder 0-3, bottleneck, decoder 3-0): the expansion ratio and the number of blocks."""

    exp_r: tuple[int, ...]
    blocks: tuple[int, ...]
    checkpointing: bool


VARIANTS: dict[str, Variant] = {
    "S": Variant((2,) * LEVELS, (2,) * LEVELS, False),
    "B": Variant((2, 3, 4, 4, 4, 4, 4, 3, 2), (2,) * LEVELS, False),
    "M": Variant((2, 3, 4, 4, 4, 4, 4, 3, 2), (3, 4, 4, 4, 4, 4, 4, 4, 3), True),
    "L": Variant((3, 4, 8, 8, 8, 8, 8, 4, 3), (3, 4, 8, 8, 8, 8, 8, 4, 3), True),
}


def default_norm() -> LayerT:
    """GroupNorm with one group per channel (the paper's normalisation)."""
    return LayerT(nn.GroupNorm, num_groups="in_ch", num_channels="in_ch")


def default_act() -> LayerT:
    """GELU (the paper's nonlinearity)."""
    return LayerT(nn.GELU)


class MedNeXtBlock(nn.Module):
    """depthwise conv -> norm -> 1x1 expansion -> act -> 1x1 compression, plus a shortcut.

    ``resample`` ``None`` keeps the size (identity shortcut, ``in_ch == out_ch``); ``"down"`` halves it and
    ``"up"`` doubles it, each with a strided 1x1 (transposed) conv as shortcut.
    """

    def __init__(self, in_ch: int, out_ch: int, *, exp_r: int, kernel_size: int, ndim: int, norm: LayerT,
                 act: LayerT, resample: str | None = None) -> None:
        super().__init__()
        conv, padding = _CONVS[ndim], kernel_size // 2
        self.pad_front = resample == "up"
        if resample == "up":
            self.depthwise = _TRANSPOSED[ndim](in_ch, in_ch, kernel_size, stride=2, padding=padding, groups=in_ch)
            self.shortcut = _TRANSPOSED[ndim](in_ch, out_ch, 1, stride=2)
        elif resample == "down":
            self.depthwise = conv(in_ch, in_ch, kernel_size, stride=2, padding=padding, groups=in_ch)
            self.shortcut = conv(in_ch, out_ch, 1, stride=2)
        else:
            self.depthwise = conv(in_ch, in_ch, kernel_size, padding=padding, groups=in_ch)
            self.shortcut = nn.Identity()
        self.norm = norm.assemble(in_ch=in_ch)
        self.expand = conv(in_ch, exp_r * in_ch, 1)
        self.act = act.assemble()
        self.compress = conv(exp_r * in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shortcut(x) + self.compress(self.act(self.expand(self.norm(self.depthwise(x)))))
        # a stride-2 transposed conv gives 2n - 1 voxels per axis: one zero at the start makes it 2n
        return F.pad(y, (1, 0) * (y.ndim - 2)) if self.pad_front else y


class MedNeXt(nn.Module):
    """MedNeXt; prefer :func:`make_mednext2d` / :func:`make_mednext3d`, which validate arguments.

    ``forward`` returns ``(B, num_classes, *spatial)``; after ``set_deep_supervision(True)`` a list of five
    outputs, full resolution first, then 1/2, 1/4, 1/8 and 1/16 (the bottleneck's head). Spatial sizes must be
    multiples of 16. With ``checkpointing`` every block recomputes its activations in the backward pass.
    """

    def __init__(self, in_ch: int, num_classes: int, *, ndim: int, base_ch: int, exp_r: Sequence[int],
                 blocks: Sequence[int], kernel_size: int, norm: LayerT, act: LayerT, checkpointing: bool) -> None:
        super().__init__()
        self.ndim, self.checkpointing, self.deep_supervision = ndim, checkpointing, False
        chs = [base_ch * 2 ** min(level, LEVELS - 1 - level) for level in range(LEVELS)]
        conv = _CONVS[ndim]

        def block(level: int, in_ch: int, resample: str | None = None) -> MedNeXtBlock:
            return MedNeXtBlock(in_ch, chs[level], exp_r=exp_r[level], kernel_size=kernel_size, ndim=ndim,
                                norm=norm, act=act, resample=resample)

        def stage(level: int) -> nn.Sequential:
            return nn.Sequential(*(block(level, chs[level]) for _ in range(blocks[level])))

        self.stem = conv(in_ch, base_ch, 1)
        self.encoder = nn.ModuleList(stage(level) for level in range(DEPTH))
        self.down = nn.ModuleList(block(level + 1, chs[level], "down") for level in range(DEPTH))
        self.bottleneck = stage(DEPTH)
        self.up = nn.ModuleList(block(level, chs[level - 1], "up") for level in range(DEPTH + 1, LEVELS))
        self.decoder = nn.ModuleList(stage(level) for level in range(DEPTH + 1, LEVELS))
        self.heads = nn.ModuleList(conv(chs[level], num_classes, 1) for level in range(LEVELS - 1, DEPTH - 1, -1))

    def set_deep_supervision(self, enabled: bool) -> None:
        """Return every head's output (``True``) or only the full-resolution one (``False``)."""
        self.deep_supervision = bool(enabled)

    def _run(self, blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return blocks(x)
        for block in blocks if isinstance(blocks, nn.Sequential) else (blocks,):
            x = checkpoint(block, x, use_reentrant=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.ndim + 2 or any(s % 2 ** DEPTH for s in x.shape[2:]):
            raise ValueError(f"MedNeXt expects a batch shaped (B, C, {', '.join('*' * self.ndim)}) with spatial "
                             f"sizes divisible by {2 ** DEPTH}; got {tuple(x.shape)}. Pad the input first, e.g. "
                             f"PaddedNetwork(net, Pad{self.ndim}d({2 ** DEPTH}))")
        x = self.stem(x)
        skips = []
        for stage, down in zip(self.encoder, self.down, strict=True):
            x = self._run(stage, x)
            skips.append(x)
            x = self._run(down, x)
        features = [self._run(self.bottleneck, x)]  # deepest first
        for up, stage in zip(self.up, self.decoder, strict=True):
            features.append(self._run(stage, self._run(up, features[-1]) + skips.pop()))
        if not self.deep_supervision:
            return self.heads[0](features[-1])
        return [head(f) for head, f in zip(self.heads, reversed(features), strict=True)]


def _positive(name: str, option: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {option} must be an integer >= {minimum}, got {value!r}")
    return value


def _per_level(name: str, option: str, value: Any, *, minimum: int) -> tuple[int, ...]:
    """An int for every level, or one int per level (encoder 0-3, bottleneck, decoder 3-0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * LEVELS
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != LEVELS:
        raise ValueError(f"{name}: {option} must be an int or {LEVELS} ints (encoder levels 0-3, bottleneck, "
                         f"decoder levels 3-0), got {value!r}")
    return tuple(_positive(name, f"{option}[{i}]", v, minimum=minimum) for i, v in enumerate(value))


def _make_mednext(name: str, ndim: int, in_ch: int, num_classes: int, variant: str, kernel_size: int, base_ch: int,
                  exp_r: Any, block_counts: Any, gradient_checkpointing: bool | None, norm: LayerT | None,
                  act: LayerT | None, unknown: dict[str, Any]) -> MedNeXt:
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; the options are variant, kernel_size, "
                         "base_ch, exp_r, block_counts, gradient_checkpointing, norm and act")
    key = variant.upper() if isinstance(variant, str) else variant
    if key not in VARIANTS:
        raise ValueError(f"{name}: variant must be one of {list(VARIANTS)}, got {variant!r}")
    preset = VARIANTS[key]
    _positive(name, "in_ch", in_ch)
    _positive(name, "num_classes", num_classes)
    _positive(name, "base_ch", base_ch)
    if _positive(name, "kernel_size", kernel_size) % 2 == 0:
        raise ValueError(f"{name}: kernel_size must be odd so the convs keep the size (the paper uses 3 and 5), "
                         f"got {kernel_size}")
    if gradient_checkpointing is not None and not isinstance(gradient_checkpointing, bool):
        raise ValueError(f"{name}: gradient_checkpointing must be True, False or None (the variant's default), "
                         f"got {gradient_checkpointing!r}")
    for option, value in (("norm", norm), ("act", act)):
        if value is not None and not isinstance(value, LayerT):
            raise ValueError(f"{name}: {option} must be a LayerT or None for the paper's, got {value!r}")
    return MedNeXt(in_ch, num_classes, ndim=ndim, base_ch=base_ch,
                   exp_r=preset.exp_r if exp_r is None else _per_level(name, "exp_r", exp_r, minimum=1),
                   blocks=preset.blocks if block_counts is None else _per_level(name, "block_counts", block_counts,
                                                                                minimum=0),
                   kernel_size=kernel_size, norm=norm or default_norm(), act=act or default_act(),
                   checkpointing=preset.checkpointing if gradient_checkpointing is None else gradient_checkpointing)


def make_mednext2d(in_ch: int, num_classes: int, *, variant: str = "B", kernel_size: int = 3, base_ch: int = 32,
                   exp_r: int | Sequence[int] | None = None, block_counts: Sequence[int] | None = None,
                   gradient_checkpointing: bool | None = None, norm: LayerT | None = None,
                   act: LayerT | None = None, **unknown: Any) -> MedNeXt:
    """2D MedNeXt; arguments as :func:`make_mednext3d`."""
    return _make_mednext("make_mednext2d", 2, in_ch, num_classes, variant, kernel_size, base_ch, exp_r,
                         block_counts, gradient_checkpointing, norm, act, unknown)


def make_mednext3d(in_ch: int, num_classes: int, *, variant: str = "B", kernel_size: int = 3, base_ch: int = 32,
                   exp_r: int | Sequence[int] | None = None, block_counts: Sequence[int] | None = None,
                   gradient_checkpointing: bool | None = None, norm: LayerT | None = None,
                   act: LayerT | None = None, **unknown: Any) -> MedNeXt:
    """3D MedNeXt: ``variant`` S, B (default), M or L with depthwise kernels of ``kernel_size`` (3 or 5).

    ``exp_r`` and ``block_counts`` replace the variant's per-level values (an int, or 9 ints: encoder levels
    0-3, bottleneck, decoder levels 3-0); ``gradient_checkpointing`` defaults to the variant's (on for M and L).
    ``norm`` (assembled with ``in_ch=channels``) and ``act`` replace GroupNorm and GELU. Unknown options raise.
    """
    return _make_mednext("make_mednext3d", 3, in_ch, num_classes, variant, kernel_size, base_ch, exp_r,
                         block_counts, gradient_checkpointing, norm, act, unknown)
