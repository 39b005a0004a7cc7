"""nnU-Net's preprocessing of one case, and its inverse for predictions.

Order, as in nnU-Net: crop to the nonzero box (any channel), normalize each channel with the scheme its name
selects (:mod:`mipcandy.data.normalization`), resample to the target spacing (images cubic by default, labels
one-hot linear; anisotropic data "separate z", see :mod:`mipcandy.data.resample`). Every setting lives in a
:class:`PreprocessingPlan`, whose :meth:`~PreprocessingPlan.key` changes whenever any output could change, and
every case gets :class:`CaseProperties`, which :func:`restore_case` uses to put a prediction back on the
original grid. The cached dataset built on these lives in :mod:`mipcandy.data.preprocess`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from mipcandy.data.cropping import BBox, bbox_shape, crop, full_bbox, nonzero_bbox, uncrop
from mipcandy.data.geometry import Geometry
from mipcandy.data.inspection import InspectionAnnotations
from mipcandy.data.intensity_stats import IntensityStats
from mipcandy.data.normalization import SCHEMES, normalize
from mipcandy.data.planning import ANISOTROPY_THRESHOLD
from mipcandy.data.resample import IMAGE_MODES, LABEL_MODES, resample, resample_to_shape

PREPROCESSING_VERSION = 1
"""Bump whenever the preprocessing code changes its output: every cached case is then rebuilt."""


@dataclass(frozen=True)
class PreprocessingPlan:
    """Every setting that shapes a preprocessed case.

    ``intensity`` holds the statistics of the ``ct`` channels (None for the others, whose normalization is per
    case), so only settings that matter enter :meth:`key`. ``target_spacing`` None keeps each case's spacing.
    """

    normalization: tuple[str, ...]
    intensity: tuple[IntensityStats | None, ...]
    target_spacing: tuple[float, ...] | None
    crop: bool = True
    image_mode: str = "cubic"
    label_mode: str = "onehot"
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD

    def __post_init__(self) -> None:
        unknown = [s for s in self.normalization if s not in SCHEMES]
        if unknown:
            raise ValueError(f"Unknown normalization scheme(s) {unknown}; use {SCHEMES}")
        if len(self.intensity) != len(self.normalization):
            raise ValueError(f"Got {len(self.intensity)} intensity statistics for {len(self.normalization)} channels")
        missing = [c for c, (s, st) in enumerate(zip(self.normalization, self.intensity, strict=True))
                   if s == "ct" and st is None]
        if missing:
            raise ValueError(f"Channel(s) {missing} use CT normalization but have no foreground intensity statistics "
                             "(no case has foreground?)")
        if self.image_mode not in IMAGE_MODES or self.label_mode not in LABEL_MODES:
            raise ValueError(f"image_mode must be one of {IMAGE_MODES} and label_mode one of {LABEL_MODES}, got "
                             f"{self.image_mode!r} and {self.label_mode!r}")
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", tuple(float(s) for s in self.target_spacing))
        object.__setattr__(self, "intensity", tuple(st if s == "ct" else None for s, st in
                                                    zip(self.normalization, self.intensity, strict=True)))

    @classmethod
    def from_annotations(
        cls,
        annotations: InspectionAnnotations,
        *,
        normalization: Sequence[str] | None = None,
        target_spacing: Sequence[float] | None = None,
        resample_cases: bool = True,
        crop: bool = True,
        image_mode: str = "cubic",
        label_mode: str = "onehot",
        anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
    ) -> PreprocessingPlan:
        """nnU-Net's plan from a dataset's inspection; any argument overrides what inspection would choose."""
        if resample_cases and target_spacing is None:
            target_spacing = annotations.target_spacing(anisotropy_threshold=anisotropy_threshold)
        return cls(
            normalization=tuple(normalization) if normalization is not None else annotations.normalization_schemes(),
            intensity=annotations.intensity,
            target_spacing=tuple(target_spacing) if resample_cases and target_spacing is not None else None,
            crop=crop,
            image_mode=image_mode,
            label_mode=label_mode,
            anisotropy_threshold=anisotropy_threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (with the code version, which is part of the key)."""
        return {
            "version": PREPROCESSING_VERSION,
            "normalization": list(self.normalization),
            "intensity": [None if s is None else s.to_dict() for s in self.intensity],
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
            "crop": self.crop,
            "image_mode": self.image_mode,
            "label_mode": self.label_mode,
            "anisotropy_threshold": self.anisotropy_threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingPlan:
        """Inverse of :meth:`to_dict`."""
        return cls(
            normalization=tuple(data["normalization"]),
            intensity=tuple(None if s is None else IntensityStats.from_dict(s) for s in data["intensity"]),
            target_spacing=None if data["target_spacing"] is None else tuple(data["target_spacing"]),
            crop=bool(data["crop"]),
            image_mode=str(data["image_mode"]),
            label_mode=str(data["label_mode"]),
            anisotropy_threshold=float(data["anisotropy_threshold"]),
        )

    def key(self) -> str:
        """SHA-256 of every setting and :data:`PREPROCESSING_VERSION`: equal keys give equal outputs."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CaseProperties:
    """What preprocessing did to one case, enough to put a prediction back on the original grid."""

    case_id: str
    shape: tuple[int, ...]
    geometry: Geometry
    bbox: BBox
    shape_after_crop: tuple[int, ...]
    shape_after_resampling: tuple[int, ...]

    @property
    def spacing(self) -> tuple[float, ...]:
        """Original spacing (tensor axis order)."""
        return self.geometry.spacing

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "case_id": self.case_id,
            "shape": list(self.shape),
            "geometry": self.geometry.to_dict(),
            "bbox": [list(b) for b in self.bbox],
            "shape_after_crop": list(self.shape_after_crop),
            "shape_after_resampling": list(self.shape_after_resampling),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseProperties:
        """Inverse of :meth:`to_dict`."""
        return cls(
            case_id=str(data["case_id"]),
            shape=tuple(int(n) for n in data["shape"]),
            geometry=Geometry.from_dict(data["geometry"]),
            bbox=tuple((int(a), int(b)) for a, b in data["bbox"]),
            shape_after_crop=tuple(int(n) for n in data["shape_after_crop"]),
            shape_after_resampling=tuple(int(n) for n in data["shape_after_resampling"]),
        )

    def preprocessed_geometry(self) -> Geometry:
        """Geometry of the preprocessed tensors: the crop box's grid, resampled over the same extent."""
        return cropped_geometry(self.geometry, self.bbox).resized(self.shape_after_crop, self.shape_after_resampling)


def cropped_geometry(geometry: Geometry, bbox: BBox) -> Geometry:
    """Geometry of the sub-grid ``bbox``: same spacing and direction, origin moved to the box's first voxel."""
    n = geometry.ndim
    # Box start along the image axes in physical order (x, y, z), in millimetres.
    offset = [start * s for (start, _), s in zip(reversed(bbox), reversed(geometry.spacing), strict=True)]
    origin = tuple(geometry.origin[r] + sum(geometry.direction[r * n + c] * offset[c] for c in range(n))
                   for r in range(n))
    return Geometry(geometry.spacing, origin, geometry.direction)


def preprocess_case(
    image: Tensor,
    label: Tensor | None,
    geometry: Geometry,
    plan: PreprocessingPlan,
    *,
    case_id: str = "case",
) -> tuple[Tensor, Tensor | None, CaseProperties]:
    """Crop, normalize and resample one case; ``label`` may be None (inference)."""
    spatial = tuple(int(n) for n in image.shape[1:])
    if len(plan.normalization) != image.shape[0]:
        raise ValueError(f"case {case_id!r} has {image.shape[0]} channels but the plan normalizes "
                         f"{len(plan.normalization)}; preprocess it with a plan made for this dataset")
    if geometry.ndim != len(spatial) or (label is not None and tuple(label.shape[1:]) != spatial):
        raise ValueError(f"case {case_id!r}: image {tuple(image.shape)}, label "
                         f"{None if label is None else tuple(label.shape)} and {geometry.ndim}D geometry disagree")
    bbox = nonzero_bbox(image) if plan.crop else full_bbox(spatial)
    image = normalize(crop(image, bbox), plan.normalization, plan.intensity)
    label = None if label is None else crop(label, bbox)
    shape_after_crop = bbox_shape(bbox)
    if plan.target_spacing is not None:
        if len(plan.target_spacing) != len(spatial):
            raise ValueError(f"case {case_id!r} is {len(spatial)}D but the target spacing is {plan.target_spacing}")
        image = resample(image, geometry.spacing, plan.target_spacing, mode=plan.image_mode)
        if label is not None:
            label = resample(label, geometry.spacing, plan.target_spacing, is_label=True, mode=plan.label_mode)
    properties = CaseProperties(case_id, spatial, geometry, bbox, shape_after_crop, tuple(image.shape[1:]))
    return image.contiguous(), None if label is None else label.contiguous(), properties


def restore_case(tensor: Tensor, properties: CaseProperties, *, is_label: bool = False, fill: float = 0) -> Tensor:
    """Put a prediction made on a preprocessed case back on the case's original grid.

    ``tensor`` is (C, *preprocessed shape): a label map (``is_label``, resampled one-hot) or per-class
    probabilities/logits (resampled linearly, which keeps them interpolatable). Voxels outside the crop box get
    ``fill`` (background). Write it with ``properties.geometry``.
    """
    if tuple(tensor.shape[1:]) != properties.shape_after_resampling:
        raise ValueError(f"case {properties.case_id!r}: expected a prediction of spatial shape "
                         f"{properties.shape_after_resampling}, got {tuple(tensor.shape[1:])}")
    mode = "onehot" if is_label else "linear"
    restored = resample_to_shape(tensor, properties.shape_after_crop, is_label=is_label, mode=mode,
                                 spacing=properties.preprocessed_geometry().spacing)
    return uncrop(restored, properties.bbox, properties.shape, fill=fill)
