"""Boundary voxels and exact Euclidean distances between two boundaries, as MONAI defines them.

A boundary voxel is a mask voxel with at least one face neighbour outside the mask, where everything
outside the array is background: the mask XOR its binary erosion by the cross-shaped (face-connected)
structuring element, which is what MONAI's ``get_mask_edges`` computes with scipy's default erosion.
Distances run from each boundary voxel of one side to the nearest boundary voxel of the other, in
physical units.

Both steps run in SimpleITK on the bounding box of the two masks, padded by one background voxel
(outside the box everything is background, so nothing changes): ``BinaryContour`` with face
connectivity gives the boundary, and the exact signed Maurer distance transform of one boundary is read
at the voxels of the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import SimpleITK as sitk
import torch
from torch import Tensor

from mipcandy.metrics._layout import CHUNK, check_mask

# SimpleITK's transform works in float32 (relative error about 1e-7); within this relative distance of a
# tolerance, counts are settled with exact lattice distances instead.
_TIE_WINDOW = 1e-5


def bounding_box(mask: Tensor) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel, or ``None`` for an empty mask."""
    box = []
    view = mask
    for axis in range(mask.ndim):
        others = tuple(i for i in range(mask.ndim) if i != axis)
        hits = view.any(dim=others).nonzero()
        if not len(hits):
            return None
        start, stop = int(hits[0, 0]), int(hits[-1, 0]) + 1
        box.append(slice(start, stop))
        view = view.narrow(axis, start, stop - start)
    return tuple(box)


def _image(mask: Tensor, box: tuple[slice, ...], spacing: tuple[float, ...]) -> sitk.Image:
    """A uint8 SimpleITK image of ``mask[box]`` with one background voxel of padding on every side."""
    padded = torch.zeros([s.stop - s.start + 2 for s in box], dtype=torch.uint8)
    padded[(slice(1, -1),) * len(box)] = mask[box]
    image = sitk.GetImageFromArray(padded.numpy())
    image.SetSpacing(tuple(reversed(spacing)))
    return image


def _boundary(image: sitk.Image, threads: int) -> sitk.Image:
    """Mask voxels with a face neighbour outside the mask (the padding makes the box border count)."""
    contour = sitk.BinaryContourImageFilter()
    contour.SetFullyConnected(False)
    contour.SetBackgroundValue(0)
    contour.SetForegroundValue(1)
    contour.SetNumberOfThreads(threads)
    return contour.Execute(image)


def _directed(queries: Tensor, features: Tensor, image: sitk.Image, threads: int) -> Tensor:
    """Distance (float64) from the voxels at flat indices ``queries`` to the nearest voxel of ``features``.

    ``image`` holds ``features``; its exact squared Euclidean distance map (float32, physical units) is
    read at the queries, and set to 0 where a query is a feature itself.
    """
    transform = sitk.SignedMaurerDistanceMapImageFilter()
    transform.SetSquaredDistance(True)
    transform.SetUseImageSpacing(True)
    transform.SetInsideIsPositive(False)
    transform.SetNumberOfThreads(threads)
    distances = transform.Execute(image)  # read in place: the view lives no longer than this image
    squared = torch.from_numpy(sitk.GetArrayViewFromImage(distances).reshape(-1)[queries.numpy()]).double().abs()
    squared[features.view(-1)[queries]] = 0.0
    return squared.sqrt()


def _lattice_shell(spacing: tuple[float, ...], squared: float, window: float) -> tuple[Tensor, Tensor]:
    """Integer offsets whose squared physical length lies within ``window`` of ``squared``, and those lengths."""
    radius = math.sqrt(squared + window)
    ranges = [torch.arange(-int(radius / s), int(radius / s) + 1) for s in spacing[:-1]]
    heads = torch.cartesian_prod(*ranges).view(-1, len(ranges))
    scale = torch.tensor(spacing, dtype=torch.float64)
    rest = (heads * scale[:-1]).square().sum(1)
    reach = (squared - rest).clamp(min=0).sqrt() / spacing[-1]
    tails = torch.stack([reach.floor(), reach.ceil()], 1).long()
    tails = torch.cat([tails, -tails], 1).view(-1, 1)
    offsets = torch.cat([heads.repeat_interleave(4, 0), tails], 1)
    lengths = (offsets * scale).square().sum(1)
    keep = (lengths - squared).abs() <= window
    return offsets[keep], lengths[keep]


def _exact_near(coords: Tensor, features: Tensor, spacing: tuple[float, ...], squared: float) -> Tensor:
    """Exact squared distances for queries known to be within the tie window of ``squared`` (inf if none found)."""
    offsets, lengths = _lattice_shell(spacing, squared, 2 * _TIE_WINDOW * squared)
    shape = torch.tensor(features.shape)
    exact = torch.full((len(coords),), math.inf, dtype=torch.float64)
    step = max(1, CHUNK // max(1, len(offsets)))
    for start in range(0, len(coords), step):
        positions = coords[start : start + step, None, :] + offsets[None]
        inside = ((positions >= 0) & (positions < shape)).all(-1)
        clamped = torch.minimum(positions.clamp(min=0), shape - 1)
        hit = features[tuple(clamped.unbind(-1))] & inside
        exact[start : start + step] = torch.where(hit, lengths, math.inf).amin(1)
    return exact


def _count_within(
    distances: Tensor, queries: Tensor, features: Tensor, spacing: tuple[float, ...], tolerance: float
) -> int:
    """How many distances are at most ``tolerance``, comparing in float32 as MONAI does, exact at ties."""
    squared = tolerance * tolerance
    near = (distances.square() - squared).abs() <= _TIE_WINDOW * squared
    if near.any():
        coords = torch.stack(torch.unravel_index(queries[near], features.shape), 1)
        exact = _exact_near(coords, features, spacing, squared)
        distances = distances.clone()
        distances[near] = torch.where(exact.isfinite(), exact.sqrt(), distances[near])
    return int((distances.float() <= torch.tensor(tolerance, dtype=torch.float32)).sum())


@dataclass(frozen=True)
class SurfaceDistances:
    """Boundary-to-boundary distances of one (case, class), float64 on the CPU.

    ``pred_edges``/``label_edges`` are the cropped boundary masks and ``pred_index``/``label_index`` the flat
    indices of their voxels, in the order of the distances. A side without boundary has no distances, and
    the other side's distances are all infinite.
    """

    pred_edges: Tensor
    label_edges: Tensor
    pred_index: Tensor
    label_index: Tensor
    spacing: tuple[float, ...]
    pred_to_label: Tensor
    label_to_pred: Tensor

    @property
    def both_empty(self) -> bool:
        """Neither side has the class."""
        return not len(self.pred_to_label) and not len(self.label_to_pred)

    @property
    def one_empty(self) -> bool:
        """Exactly one side has the class."""
        return not self.both_empty and not (len(self.pred_to_label) and len(self.label_to_pred))

    def count_within(self, tolerance: float) -> int:
        """Boundary voxels of both sides within ``tolerance`` of the other side's boundary."""
        forward = _count_within(self.pred_to_label, self.pred_index, self.label_edges, self.spacing, tolerance)
        backward = _count_within(self.label_to_pred, self.label_index, self.pred_edges, self.spacing, tolerance)
        return forward + backward


def surface_distances(pred: Tensor, label: Tensor, spacing: tuple[float, ...], threads: int) -> SurfaceDistances:
    """Boundary distances between two 0/1 masks of the same shape, on any device; SimpleITK uses ``threads``.

    Mask values are checked inside the bounding box of their nonzero voxels only: outside it, all are 0.
    """
    box = bounding_box(pred.bool() | label.bool())  # nonzero, NaN included: every suspect value gets checked
    if box is None:
        box = (slice(0, 0),) * pred.ndim
    check_mask(pred[box], "outputs")
    check_mask(label[box], "labels")
    images = [_boundary(_image(mask, box, spacing), threads) for mask in (pred, label)]
    pred_edges, label_edges = (torch.from_numpy(sitk.GetArrayFromImage(image)).bool() for image in images)
    pred_index = pred_edges.view(-1).nonzero()[:, 0]
    label_index = label_edges.view(-1).nonzero()[:, 0]
    if len(pred_index) and len(label_index):
        forward = _directed(pred_index, label_edges, images[1], threads)
        backward = _directed(label_index, pred_edges, images[0], threads)
    else:
        forward = torch.full((len(pred_index),), math.inf, dtype=torch.float64)
        backward = torch.full((len(label_index),), math.inf, dtype=torch.float64)
    return SurfaceDistances(pred_edges, label_edges, pred_index, label_index, spacing, forward, backward)
