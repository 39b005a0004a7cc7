"""Three orthogonal slices through one voxel of a 3D volume: the quick look at a case, a label or a prediction.

The default point is where a reader looks first: the foreground centroid of a label volume (integer or bool),
the centre of an image. Pass the label's ``point`` to slice the image at the same place.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["OrthographicViews", "orthographic_views"]


class OrthographicViews(NamedTuple):
    """The slices of a ``([C,] D, H, W)`` volume through ``point = (d, h, w)``, channels kept when given.

    ``hw`` is the (H, W) plane at depth ``d``, ``dw`` the (D, W) plane at row ``h`` and ``dh`` the (D, H) plane
    at column ``w``. They are views of the volume, not copies.
    """

    hw: Tensor
    dw: Tensor
    dh: Tensor
    point: tuple[int, int, int]


def _is_label(volume: Tensor) -> bool:
    return not (volume.is_floating_point() or volume.is_complex())


def _default_point(volume: Tensor) -> tuple[int, ...]:
    """The rounded centroid of a label volume's nonzero voxels, else the centre voxel."""
    spatial = volume.shape[-3:]
    if _is_label(volume):
        mask = volume != 0 if volume.ndim == 3 else (volume != 0).any(dim=0)
        coordinates = torch.nonzero(mask)
        if coordinates.numel():
            return tuple(int(v) for v in coordinates.double().mean(dim=0).round())
    return tuple(n // 2 for n in spatial)


def orthographic_views(volume: Tensor, point: Sequence[int] | None = None) -> OrthographicViews:
    """The three axis-aligned slices of ``volume`` ``(D, H, W)`` or ``(C, D, H, W)`` through ``point``.

    Without ``point``: the foreground centroid of a label volume (the mean position of its nonzero voxels,
    rounded; it can lie outside a non-convex foreground), else, and for an empty label, the centre voxel.
    """
    if volume.ndim not in (3, 4):
        raise ValueError(f"orthographic_views needs a 3D volume (D, H, W) or (C, D, H, W), got shape "
                         f"{tuple(volume.shape)}; a 2D image is its own view")
    spatial = tuple(volume.shape[-3:])
    chosen = _default_point(volume) if point is None else tuple(int(p) for p in point)
    if len(chosen) != 3 or not all(0 <= p < n for p, n in zip(chosen, spatial, strict=True)):
        raise ValueError(f"point {tuple(point or ())} must be three voxel indices (d, h, w) inside the volume's "
                         f"spatial shape {spatial}")
    d, h, w = chosen
    return OrthographicViews(volume[..., d, :, :], volume[..., :, h, :], volume[..., :, :, w], (d, h, w))
