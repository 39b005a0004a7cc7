"""Plumbing shared by the batched transforms: the transform protocol, input checks and row-wise updates.

Every transform takes ``(image, label, generator)`` with image ``(B, C, *spatial)`` floating point and label
``(B, 1, *spatial)`` integer (or ``None``), and may write into both tensors in place, as nnU-Net's transforms do;
:class:`~mipcandy.data.augment.pipeline.Compose` copies its input once so callers keep their tensors.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


class Transform(Protocol):
    """A batched augmentation step; returns the (possibly new) image and label."""

    def __call__(
        self, image: Tensor, label: Tensor | None, generator: torch.Generator
    ) -> tuple[Tensor, Tensor | None]: ...


@runtime_checkable
class DescribedTransform(Protocol):
    """A transform that states its settings (JSON), so that the experiment record can keep them."""

    settings: dict[str, Any]


def validate_batch(image: Tensor, label: Tensor | None, generator: torch.Generator, *, where: str) -> None:
    """Fail early, naming the transform, when a batch does not follow the (B, C, *spatial) contract."""
    if not isinstance(image, Tensor) or image.dim() not in (4, 5):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{where}: image must be a (B, C, *spatial) tensor with 2 or 3 spatial axes, got {shape}; "
                         "add the batch axis with image[None] when augmenting a single case")
    if not image.is_floating_point():
        raise TypeError(f"{where}: image must be floating point, got {image.dtype}; convert it with image.float()")
    if label is not None:
        if not isinstance(label, Tensor) or label.dim() != image.dim() or label.shape[0] != image.shape[0] \
                or label.shape[2:] != image.shape[2:]:
            shape = tuple(label.shape) if isinstance(label, Tensor) else type(label).__name__
            raise ValueError(f"{where}: label must be (B, 1, *spatial) matching image {tuple(image.shape)}, "
                             f"got {shape}")
        if label.is_floating_point() or label.is_complex():
            raise TypeError(f"{where}: label must hold integer class ids, got {label.dtype}; convert it with "
                            "label.long() (soft labels are not supported)")
        if label.device != image.device:
            raise ValueError(f"{where}: image is on {image.device} but label on {label.device}; move both to one "
                             "device first")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"{where}: pass a CPU torch.Generator, e.g. torch.Generator().manual_seed(0), also for GPU "
                        "tensors: parameters are drawn on the CPU so that skipping undrawn samples needs no device "
                        "sync, and random fields use a device generator seeded from it")


def check_batch(
    image: Tensor, label: Tensor | None, generator: torch.Generator, *, where: str
) -> tuple[Tensor, Tensor | None]:
    """Validate a batch and return contiguous tensors (no copy when they already are)."""
    validate_batch(image, label, generator, where=where)
    return image.contiguous(), None if label is None else label.contiguous()


def check_probability(owner: str, name: str, value: float) -> float:
    """Return ``value`` as a float after checking it lies in [0, 1]."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {name} must be a probability in [0, 1], got {value}")
    return value


def check_bounds(owner: str, name: str, bounds: Sequence[float], *, minimum: float | None = None,
                 positive: bool = False) -> tuple[float, float]:
    """Return a (low, high) range as floats after checking its order and lower limit."""
    values = tuple(float(v) for v in bounds)
    if len(values) != 2 or values[0] > values[1]:
        raise ValueError(f"{owner}: {name} must be a (low, high) pair with low <= high, got {bounds!r}")
    if positive and values[0] <= 0:
        raise ValueError(f"{owner}: {name} must be positive, got {bounds!r}")
    if minimum is not None and values[0] < minimum:
        raise ValueError(f"{owner}: {name} must not go below {minimum}, got {bounds!r}")
    return values


def check_axes(owner: str, axes: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Resolve spatial axes (None means all) and check them against the batch's number of spatial axes."""
    if axes is None:
        return tuple(range(ndim))
    resolved = tuple(sorted({int(a) for a in axes}))
    if not resolved or resolved[0] < 0 or resolved[-1] >= ndim:
        raise ValueError(f"{owner}: axes {tuple(axes)} must be spatial axes in [0, {ndim - 1}] for a {ndim}D batch")
    return resolved


def rows_of(mask: Tensor) -> Tensor:
    """Indices (ascending, CPU) of the True entries of a flat decision mask."""
    return mask.reshape(-1).nonzero().flatten()


def _run(rows: Tensor) -> tuple[int, int] | None:
    first, n = int(rows[0]), rows.numel()
    return (first, n) if int(rows[-1]) - first == n - 1 else None


def read_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x[rows] along the first axis: a view for a contiguous run of rows, else a gathered copy."""
    run = _run(rows)
    return x.narrow(0, *run) if run else x[rows.to(x.device)]


def write_rows(x: Tensor, rows: Tensor, values: Tensor) -> None:
    """Store ``values`` into x[rows] along the first axis (nothing to do when they already are that view)."""
    run = _run(rows)
    if run is None:
        x[rows.to(x.device)] = values
        return
    target = x.narrow(0, *run)
    if not (values.data_ptr() == target.data_ptr() and values.stride() == target.stride()):
        target.copy_(values)


def update_rows(x: Tensor, rows: Tensor, fn: Callable[[Tensor], Tensor]) -> None:
    """Replace x[rows] by fn(x[rows]); ``fn`` may work in place, which is free for a contiguous run of rows."""
    if rows.numel():
        write_rows(x, rows, fn(read_rows(x, rows)))


def broadcast_rows(values: Tensor, like: Tensor) -> Tensor:
    """Per-row (or per row and channel) parameters shaped to broadcast over ``like``'s remaining axes."""
    values = values.to(device=like.device, dtype=like.dtype)
    return values.reshape(*values.shape, *[1] * (like.dim() - values.dim()))
