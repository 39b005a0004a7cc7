"""Bounding boxes on channel-first tensors: crop to the nonzero region and put a cropped tensor back.

A bounding box is one ``(start, stop)`` pair per spatial axis (stop exclusive), in tensor axis order, like
nnU-Net's ``[[start, stop], ...]``; it is what preprocessing records so that predictions can be put back.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

BBox = tuple[tuple[int, int], ...]


def full_bbox(shape: Sequence[int]) -> BBox:
    """The box covering the whole of ``shape``."""
    return tuple((0, int(n)) for n in shape)


def bbox_shape(bbox: BBox) -> tuple[int, ...]:
    """Edge lengths of ``bbox``."""
    return tuple(stop - start for start, stop in bbox)


def bbox_slices(bbox: BBox) -> tuple[slice, ...]:
    """Slices selecting ``bbox`` from the spatial axes."""
    return tuple(slice(start, stop) for start, stop in bbox)


def mask_bbox(mask: Tensor) -> BBox | None:
    """Tight box around the True voxels of a spatial ``mask``, or None when nothing is set."""
    extents = []
    for axis in range(mask.ndim):
        others = tuple(d for d in range(mask.ndim) if d != axis)
        hits = torch.nonzero(mask.any(dim=others) if others else mask).flatten()
        if hits.numel() == 0:
            return None
        extents.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(extents)


def nonzero_bbox(image: Tensor) -> BBox:
    """nnU-Net's crop box: around the voxels where any channel of ``image`` (C, *spatial) is nonzero.

    An all-zero image keeps its full extent (nothing to crop to). nnU-Net fills holes in the mask first, which
    cannot change the box, so it is not done here.
    """
    box = mask_bbox((image != 0).any(dim=0))
    return full_bbox(image.shape[1:]) if box is None else box


def crop(tensor: Tensor, bbox: BBox) -> Tensor:
    """``tensor`` (C, *spatial) restricted to ``bbox`` (a view)."""
    return tensor[(slice(None), *bbox_slices(bbox))]


def uncrop(tensor: Tensor, bbox: BBox, shape: Sequence[int], *, fill: float = 0) -> Tensor:
    """Inverse of :func:`crop`: ``tensor`` (C, *bbox shape) placed at ``bbox`` in a ``fill``-ed (C, *shape)."""
    if tuple(tensor.shape[1:]) != bbox_shape(bbox):
        raise ValueError(f"Cannot put a tensor of spatial shape {tuple(tensor.shape[1:])} into box {bbox}")
    out = torch.full((tensor.shape[0], *shape), fill, dtype=tensor.dtype, device=tensor.device)
    out[(slice(None), *bbox_slices(bbox))] = tensor
    return out
