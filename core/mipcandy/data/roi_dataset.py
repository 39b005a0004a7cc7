"""Deterministic patches around the inspected foreground: the same patches every time, for validation and debugging.

:class:`~mipcandy.data.roi.RandomROIDataset` draws new random patches for training. Looking at what a network
does on the foreground, comparing two runs on identical inputs, or validating cheaply on patches needs the
opposite: a fixed list of patches, each placed where the inspection found foreground. Placement reuses the
random sampler's rule (:func:`~mipcandy.data.roi.patch_start` with a centre): the patch is centred, moved inside
the image when it would cross a border, and padded (image 0, label 0) when the image is smaller than the patch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mipcandy.data.cropping import BBox, crop, uncrop
from mipcandy.data.inspection import CaseAnnotation, InspectionAnnotations, inspect
from mipcandy.data.roi import patch_start

__all__ = ["ROIDataset", "ROIPatch"]


@runtime_checkable
class RegionReader(Protocol):
    """A dataset that reads part of a case without loading all of it (the preprocessing cache)."""

    def read_region(self, i: int, bbox: BBox) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class ROIPatch:
    """Where one patch lies: centred on ``center`` of case ``case_id``, covering ``start`` to ``start + shape``.

    ``class_id`` is the class the patch was placed for, ``None`` for a patch around the whole foreground (or
    around the image centre, for a case without foreground). ``start`` may be negative, and the patch may reach
    past the image, when the image is smaller than the patch.
    """

    case_id: str
    class_id: int | None
    center: tuple[int, ...]
    start: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        """A unique name: the case id, plus the class for a per-class patch."""
        return self.case_id if self.class_id is None else f"{self.case_id}:class{self.class_id}"

    def region(self, image_shape: Sequence[int]) -> tuple[BBox, BBox]:
        """The part of the image the patch covers, and where that part lies inside the patch."""
        inside = tuple((max(s, 0), min(s + p, int(n))) for s, p, n in zip(self.start, self.shape, image_shape,
                                                                           strict=True))
        return inside, tuple((a - s, b - s) for (a, b), s in zip(inside, self.start, strict=True))


def _box_center(bbox: BBox) -> tuple[int, ...]:
    """The voxel a patch centres on so that it holds the whole box whenever the box fits in it."""
    return tuple((start + stop) // 2 for start, stop in bbox)


def _nearest(locations: np.ndarray, point: Sequence[int]) -> tuple[int, ...]:
    """The stored location closest to ``point``: a voxel that surely belongs to the class."""
    distances = ((locations - np.asarray(point)) ** 2).sum(axis=1)
    return tuple(int(v) for v in locations[int(np.argmin(distances))])


def plan_patches(record: CaseAnnotation, patch_shape: Sequence[int], *, per_class: bool) -> list[ROIPatch]:
    """The patches of one case (see :class:`ROIDataset`)."""
    shape = tuple(int(p) for p in patch_shape)
    unused = np.random.default_rng(0)  # patch_start draws nothing when it is given a centre

    def patch(class_id: int | None, center: tuple[int, ...]) -> ROIPatch:
        return ROIPatch(record.case_id, class_id, center, patch_start(record.shape, shape, unused, center), shape)

    if per_class and record.class_bboxes:
        patches = []
        for class_id, bbox in sorted(record.class_bboxes.items()):
            center = _box_center(bbox)
            locations = record.locations.get(class_id)
            if locations is not None and len(locations):
                center = _nearest(locations, center)
            patches.append(patch(class_id, center))
        return patches
    box = record.foreground_bbox
    return [patch(None, _box_center(box) if box is not None else tuple(n // 2 for n in record.shape))]


class ROIDataset(Dataset):
    """Fixed patches ``(image (C, *patch), label (1, *patch))`` around each case's inspected foreground.

    ``source`` is :class:`~mipcandy.data.inspection.InspectionAnnotations` attached to the dataset they describe,
    or such a dataset, which is then inspected. ``patch_shape`` defaults to the planned patch shape.

    By default there is one patch per case, centred on its foreground box, so it holds the whole foreground when
    that fits. With ``per_class=True`` there is one patch per case and foreground class, centred on the class's
    stored location nearest to its box centre (a voxel of the class, so the patch holds some of it even for a
    ring-shaped class). A case without foreground gets one patch at its centre either way, so every case is seen.
    :attr:`patches` says where each item lies; :meth:`case_id` names it for the trainer's per-case reports.
    """

    def __init__(self, source: InspectionAnnotations | Any, *, patch_shape: Sequence[int] | None = None,
                 per_class: bool = False) -> None:
        annotations = source if isinstance(source, InspectionAnnotations) else inspect(source, progress=False)
        if annotations.dataset is None:
            raise ValueError("ROIDataset: the annotations are not attached to a dataset; load them with "
                             "load_inspection_annotations(path, dataset) or pass the dataset itself")
        shape = tuple(int(p) for p in (patch_shape or annotations.patch_shape()))
        if len(shape) != annotations.ndim or min(shape) < 1:
            raise ValueError(f"ROIDataset: patch_shape {shape} must have {annotations.ndim} positive edges")
        self.annotations = annotations
        self.dataset = annotations.dataset
        self.patch_shape = shape
        self.patches: tuple[ROIPatch, ...] = tuple(
            p for record in annotations.cases for p in plan_patches(record, shape, per_class=per_class))
        index = {case_id: self.dataset.index(case_id) for case_id in annotations.case_ids}
        self._dataset_index = [index[p.case_id] for p in self.patches]
        self._case_shape = {record.case_id: record.shape for record in annotations.cases}

    @property
    def labels(self) -> dict[str, int] | None:
        """The inspected dataset's ``{name: id}`` labels, when it declares them."""
        return self.annotations.labels

    def __len__(self) -> int:
        return len(self.patches)

    def case_id(self, i: int) -> str:
        """The unique name of item ``i`` (:attr:`ROIPatch.name`)."""
        return self.patches[i].name

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        patch = self.patches[i]
        inside, target = patch.region(self._case_shape[patch.case_id])
        j = self._dataset_index[i]
        if isinstance(self.dataset, RegionReader):
            image, label = self.dataset.read_region(j, inside)
        else:
            image, label = self.dataset[j]
            image, label = crop(image, inside).clone(), crop(label, inside).clone()  # let go of the whole case
        image = image.to(torch.float32)
        if tuple(image.shape[1:]) != patch.shape:  # the image is smaller than the patch: pad with 0
            image, label = uncrop(image, target, patch.shape), uncrop(label, target, patch.shape)
        return image, label
