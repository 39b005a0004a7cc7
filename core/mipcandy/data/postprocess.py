"""From aggregated logits to probabilities and label maps, and nnU-Net's keep-the-largest-component step.

The binary rule is the channel count, encoded once in :mod:`mipcandy.data.conversion`: one channel means a sigmoid
network (foreground where the logit > 0,
i.e. sigmoid > 0.5), more than one a softmax network (argmax). Logits are ``(C, *spatial)``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import Tensor

from mipcandy.data.conversion import convert_logits_to_ids, is_sigmoid_output

__all__ = ["keep_largest_component", "logits_to_labels", "logits_to_probabilities"]


def logits_to_probabilities(logits: Tensor) -> Tensor:
    """Softmax over channels, or the sigmoid of a single channel (see ``is_sigmoid_output``)."""
    _check_logits(logits)
    return logits.sigmoid() if is_sigmoid_output(logits) else logits.softmax(0)


def logits_to_labels(logits: Tensor) -> Tensor:
    """int64 ``(1, *spatial)`` class ids: argmax over channels, or ``logit > 0`` for a single channel."""
    _check_logits(logits)
    return convert_logits_to_ids(logits)


def keep_largest_component(labels: Tensor, classes: Iterable[int | Sequence[int]] | None = None, *,
                           fully_connected: bool = True) -> Tensor:
    """Set every voxel of a region outside its largest connected component to background (0).

    ``classes`` lists the regions: an int is one class, a sequence of ints is treated as one joint region (nnU-Net
    first tries all foreground classes together, then each class). Default: each foreground class present.
    ``fully_connected`` counts diagonal neighbours as connected (8/26-connectivity, nnU-Net's choice) instead of
    faces only. Components tied for the largest size are all kept (as nnU-Net does).
    Works on ``(*spatial)`` or ``(1, *spatial)`` integer label maps, 2D or 3D; returns a new tensor.
    """
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"keep_largest_component needs an integer label map, got dtype {labels.dtype}; "
                        "convert probabilities with logits_to_labels first")
    array = labels.detach().cpu().numpy()
    squeeze = array.ndim in (3, 4) and array.shape[0] == 1
    spatial = array[0] if squeeze else array
    if spatial.ndim not in (2, 3):
        raise ValueError(f"label map of shape {tuple(labels.shape)}: expected (*spatial) or (1, *spatial), 2D or 3D")
    regions = [c for c in np.unique(spatial).tolist() if c != 0] if classes is None else list(classes)
    result = spatial.copy()
    for region in regions:
        ids = [int(region)] if isinstance(region, int | np.integer) else [int(c) for c in region]
        mask = np.isin(spatial, ids)
        if mask.any():
            result[mask & ~_largest(mask, fully_connected)] = 0
    out = result[None] if squeeze else result
    return torch.from_numpy(np.ascontiguousarray(out)).to(labels.device)


def _largest(mask: np.ndarray, fully_connected: bool) -> np.ndarray:
    """The largest component(s) of ``mask``; ties are all kept, as nnU-Net does."""
    components = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), fully_connected))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return (sizes == sizes.max())[components]


def _check_logits(logits: Tensor) -> None:
    if logits.ndim < 2 or logits.shape[0] < 1:
        raise ValueError(f"logits of shape {tuple(logits.shape)}: expected (C, *spatial) with C >= 1")
