"""Padding for networks with size constraints: pad the input, run the network, crop every output back.

``Pad2d``/``Pad3d`` pad up to a multiple of the network's divisibility, ``PadTo`` up to a minimum shape. Both are
stateless: ``paddings(shape)`` says what they add, and :func:`unpad` removes it. :class:`PaddedNetwork` combines
them with a network so that any input size works, deep-supervision outputs included (each is cropped by the
padding scaled to its resolution).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mipcandy.hookspecs import DeepSupervisedNetwork

Paddings = tuple[tuple[int, int], ...]


def _per_axis(name: str, value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != ndim or any(v < 1 for v in values):
        raise ValueError(f"{name} needs {ndim} positive values (or one int), got {value!r}")
    return values


def _symmetric(totals: Sequence[int]) -> Paddings:
    return tuple((t // 2, t - t // 2) for t in totals)


class _Padding(nn.Module):
    """Pads the trailing ``ndim`` axes with what :meth:`paddings` says (constant ``value`` or another mode)."""

    ndim: int

    def __init__(self, *, value: float = 0, mode: str = "constant") -> None:
        super().__init__()
        self.value, self.mode = value, mode

    def paddings(self, shape: Sequence[int]) -> Paddings:
        """(before, after) per spatial axis for an input whose trailing axes are ``shape``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = [p for pair in reversed(self.paddings(tuple(x.shape))) for p in pair]
        if not any(flat):
            return x
        if self.mode == "constant":
            return F.pad(x, flat, mode="constant", value=self.value)
        return F.pad(x, flat, mode=self.mode)


class _PadToMultiple(_Padding):
    def __init__(self, min_factor: int | Sequence[int], *, value: float = 0, mode: str = "constant") -> None:
        super().__init__(value=value, mode=mode)
        self.min_factor = _per_axis("min_factor", min_factor, self.ndim)

    def paddings(self, shape: Sequence[int]) -> Paddings:
        spatial = tuple(shape)[-self.ndim:]
        return _symmetric([math.ceil(s / f) * f - s for s, f in zip(spatial, self.min_factor, strict=True)])


class Pad2d(_PadToMultiple):
    """Pad (…, H, W) symmetrically up to a multiple of ``min_factor`` (an int or one per axis)."""

    ndim = 2


class Pad3d(_PadToMultiple):
    """Pad (…, D, H, W) symmetrically up to a multiple of ``min_factor`` (an int or one per axis)."""

    ndim = 3


class PadTo(_Padding):
    """Pad the trailing axes symmetrically up to at least ``min_shape``; larger axes are left as they are."""

    def __init__(self, min_shape: Sequence[int], *, value: float = 0, mode: str = "constant") -> None:
        super().__init__(value=value, mode=mode)
        self.min_shape = _per_axis("min_shape", min_shape, len(min_shape))
        self.ndim = len(self.min_shape)

    def paddings(self, shape: Sequence[int]) -> Paddings:
        spatial = tuple(shape)[-self.ndim:]
        return _symmetric([max(0, m - s) for s, m in zip(spatial, self.min_shape, strict=True)])


def unpad(x: torch.Tensor, paddings: Paddings, *, scale: Sequence[float] | None = None) -> torch.Tensor:
    """Crop ``paddings`` (as ``paddings()`` returned them) off the trailing axes of ``x``.

    ``scale`` (one factor per axis, output size / input size) crops a lower-resolution output, e.g. a
    deep-supervision head at half resolution, to the voxels that cover the unpadded input: it keeps
    ``ceil(original size * scale)`` voxels from ``floor(before * scale)`` on.
    """
    ndim = len(paddings)
    factors = scale if scale is not None else (1.0,) * ndim
    index: list[slice] = [slice(None)] * (x.ndim - ndim)
    for axis, ((before, after), factor) in enumerate(zip(paddings, factors, strict=True)):
        original = round(x.shape[x.ndim - ndim + axis] / factor) - before - after
        start = math.floor(before * factor)
        index.append(slice(start, start + math.ceil(original * factor)))
    return x[tuple(index)]


class PaddedNetwork(nn.Module):
    """``network`` behind a padding: inputs of any size are padded, every output is cropped back.

    With deep supervision on, each output is cropped by the padding scaled to its resolution. The wrapped
    network's weights live under ``network.``; ``set_deep_supervision`` is passed through.
    """

    def __init__(self, network: nn.Module, padding: _Padding) -> None:
        super().__init__()
        self.network = network
        self.padding = padding

    def set_deep_supervision(self, enabled: bool) -> None:
        """Switch the wrapped network's deep supervision (it must implement ``DeepSupervisedNetwork``)."""
        if not isinstance(self.network, DeepSupervisedNetwork):
            raise TypeError(f"{type(self.network).__name__} has no deep-supervision heads")
        self.network.set_deep_supervision(enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        paddings = self.padding.paddings(tuple(x.shape))
        padded = self.padding(x)
        outputs = self.network(padded)
        spatial = padded.shape[2:]

        def crop(output: torch.Tensor) -> torch.Tensor:
            scale = [o / s for o, s in zip(output.shape[2:], spatial, strict=True)]
            return unpad(output, paddings, scale=scale)

        return [crop(o) for o in outputs] if isinstance(outputs, list | tuple) else crop(outputs)
