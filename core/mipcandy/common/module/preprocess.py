"""Pad inputs to a multiple of the network's divisibility, and restore outputs to the original size."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _Pad(nn.Module):
    """Pads the trailing ``ndim`` axes symmetrically up to a multiple of ``min_factor``.

    The last paddings used are kept so that the paired restoring module can crop them away.
    """

    ndim: int

    def __init__(self, min_factor: int | tuple[int, ...], *, value: float = 0, mode: str = "constant") -> None:
        super().__init__()
        self.min_factor = (min_factor,) * self.ndim if isinstance(min_factor, int) else tuple(min_factor)
        if len(self.min_factor) != self.ndim:
            raise ValueError(f"min_factor needs {self.ndim} values, got {self.min_factor}")
        self.value, self.mode = value, mode
        self.last_paddings: tuple[tuple[int, int], ...] = ((0, 0),) * self.ndim

    def paddings(self, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        """(before, after) per spatial axis for an input whose trailing axes are ``shape``."""
        spatial = shape[-self.ndim:]
        totals = [math.ceil(s / f) * f - s for s, f in zip(spatial, self.min_factor, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)

    def padded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial shape after padding."""
        return tuple(s + a + b for s, (a, b) in zip(shape[-self.ndim:], self.paddings(shape), strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_paddings = self.paddings(tuple(x.shape))
        flat = [p for pair in reversed(self.last_paddings) for p in pair]
        if not any(flat):
            return x
        if self.mode == "constant":
            return F.pad(x, flat, mode="constant", value=self.value)
        return F.pad(x, flat, mode=self.mode)


class _Restore(nn.Module):
    """Crops away what the paired pad module added last time."""

    def __init__(self, pad: _Pad) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = [slice(None)] * (x.ndim - self.pad.ndim)
        index += [slice(a, x.shape[x.ndim - self.pad.ndim + i] - b) for i, (a, b) in enumerate(self.pad.last_paddings)]
        return x[tuple(index)]


class Pad2d(_Pad):
    """Pad (…, H, W) to a multiple of ``min_factor``."""

    ndim = 2


class Pad3d(_Pad):
    """Pad (…, D, H, W) to a multiple of ``min_factor``."""

    ndim = 3


class Restore2d(_Restore):
    """Undo :class:`Pad2d`."""


class Restore3d(_Restore):
    """Undo :class:`Pad3d`."""
