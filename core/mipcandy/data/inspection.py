"""Dataset inspection (nnU-Net's fingerprint plus per-class foreground locations), with bounded memory.

Per case: shape, spacing, the nonzero crop box (and so the shape after cropping), the foreground box, voxel
counts of every class, the box of every foreground class, and at most ``max_samples_per_class`` randomly chosen
voxel locations of each foreground class (never background), which foreground oversampling draws from.
Per channel: foreground intensity statistics pooled as nnU-Net's fingerprint does (see
:mod:`mipcandy.data.intensity_stats`): at most ``intensity_samples // n_cases`` foreground voxels per case inside
the crop box. Derived: target spacing, median shape, a percentile foreground shape and a patch shape
(:mod:`mipcandy.data.planning`). All random choices are seeded per case (seed, case id), so results do not
depend on the order or subset of cases.
"""
from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor

from mipcandy.atomic import atomic_write_text
from mipcandy.data.cropping import BBox, bbox_shape, nonzero_bbox
from mipcandy.data.intensity_stats import IntensityPool, IntensityStats
from mipcandy.data.normalization import normalization_schemes
from mipcandy.data.planning import (
    ANISOTROPY_THRESHOLD,
    DEFAULT_DIVISOR,
    median_shape_at,
    plan_patch_shape,
    plan_target_spacing,
)

FORMAT = "mipcandy.inspection"
FORMAT_VERSION = 1
MAX_SAMPLES_PER_CLASS = 10_000
INTENSITY_SAMPLES = 100_000_000  # nnU-Net's 10e7 foreground voxels for the whole dataset
_CHUNK = 1 << 22  # foreground voxels unravelled at a time


@dataclass(frozen=True, eq=False)
class CaseAnnotation:
    """What inspection records about one case; coordinates are voxel indices of the inspected tensors.

    ``locations[c]`` is an (n, ndim) int32 array (int32 halves the memory of 10k locations per class and case).
    """

    case_id: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    crop_bbox: BBox
    foreground_bbox: BBox | None
    class_counts: dict[int, int]
    class_bboxes: dict[int, BBox]
    locations: dict[int, np.ndarray]

    @property
    def shape_after_crop(self) -> tuple[int, ...]:
        """Spatial shape once cropped to the nonzero box (nnU-Net's ``shapes_after_crop``)."""
        return bbox_shape(self.crop_bbox)

    @property
    def foreground_classes(self) -> list[int]:
        """Foreground class ids with at least one stored location."""
        return sorted(c for c, locs in self.locations.items() if len(locs))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CaseAnnotation):
            return NotImplemented
        plain = ("case_id", "shape", "spacing", "crop_bbox", "foreground_bbox", "class_counts", "class_bboxes")
        return all(getattr(self, n) == getattr(other, n) for n in plain) and self.locations.keys() == \
            other.locations.keys() and all(np.array_equal(v, other.locations[k]) for k, v in self.locations.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; locations are flattened to one list of ints per class."""
        return {
            "case_id": self.case_id,
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "shape_after_crop": list(self.shape_after_crop),
            "crop_bbox": _bbox_json(self.crop_bbox),
            "foreground_bbox": _bbox_json(self.foreground_bbox),
            "class_counts": {str(c): n for c, n in sorted(self.class_counts.items())},
            "class_bboxes": {str(c): _bbox_json(b) for c, b in sorted(self.class_bboxes.items())},
            "locations": {str(c): locs.reshape(-1).tolist() for c, locs in sorted(self.locations.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseAnnotation:
        """Inverse of :meth:`to_dict`."""
        ndim = len(data["shape"])
        return cls(
            case_id=str(data["case_id"]),
            shape=tuple(int(n) for n in data["shape"]),
            spacing=tuple(float(s) for s in data["spacing"]),
            crop_bbox=_bbox_from_json(data["crop_bbox"]),
            foreground_bbox=_bbox_from_json(data["foreground_bbox"]),
            class_counts={int(c): int(n) for c, n in data["class_counts"].items()},
            class_bboxes={int(c): _bbox_from_json(b) for c, b in data["class_bboxes"].items()},
            locations={int(c): np.asarray(v, dtype=np.int32).reshape(-1, ndim) for c, v in data["locations"].items()},
        )


def _bbox_json(bbox: BBox | None) -> list[list[int]] | None:
    return None if bbox is None else [[start, stop] for start, stop in bbox]


def _bbox_from_json(data: Sequence[Sequence[int]] | None) -> BBox | None:
    return None if data is None else tuple((int(start), int(stop)) for start, stop in data)


@dataclass(frozen=True, eq=False)
class InspectionAnnotations:
    """The result of :func:`inspect`: per-case records, per-channel statistics and the planning rules on them.

    ``dataset`` is the inspected dataset when known (it is not saved); :class:`~mipcandy.data.roi.RandomROIDataset`
    reads patches from it.
    """

    cases: tuple[CaseAnnotation, ...]
    intensity: tuple[IntensityStats | None, ...]
    channel_names: tuple[str, ...]
    labels: dict[str, int] | None
    settings: dict[str, int]
    dataset: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.cases:
            raise ValueError("Inspection annotations need at least one case")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InspectionAnnotations):
            return NotImplemented
        names = ("cases", "intensity", "channel_names", "labels", "settings")
        return all(getattr(self, n) == getattr(other, n) for n in names)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.cases[0].shape)

    @property
    def case_ids(self) -> list[str]:
        """Case ids in inspection order."""
        return [c.case_id for c in self.cases]

    def case(self, case_id: str) -> CaseAnnotation:
        """The record of ``case_id``."""
        for record in self.cases:
            if record.case_id == case_id:
                return record
        raise KeyError(f"Case {case_id!r} is not in these annotations; run inspect() on the current dataset")

    def with_dataset(self, dataset: Any) -> InspectionAnnotations:
        """These annotations attached to ``dataset`` (which must hold every annotated case)."""
        ids = getattr(dataset, "case_ids", None)
        if ids is not None:
            missing = sorted(set(self.case_ids) - set(ids))
            if missing:
                raise ValueError(f"The dataset lacks {len(missing)} annotated case(s) {missing[:10]}; these "
                                 "annotations belong to another dataset: run inspect() on this one")
        return replace(self, dataset=dataset)

    def normalization_schemes(self) -> tuple[str, ...]:
        """Normalization scheme of each channel, from its name (see :mod:`mipcandy.data.normalization`)."""
        return normalization_schemes(self.channel_names)

    def target_spacing(self, *, anisotropy_threshold: float = ANISOTROPY_THRESHOLD) -> tuple[float, ...]:
        """nnU-Net's target spacing rule over the cases' spacings and cropped shapes."""
        return plan_target_spacing([c.spacing for c in self.cases], [c.shape_after_crop for c in self.cases],
                                   anisotropy_threshold=anisotropy_threshold)

    def median_shape(self, *, target_spacing: Sequence[float] | None = None) -> tuple[float, ...]:
        """Median cropped shape once resampled to ``target_spacing`` (default: :meth:`target_spacing`)."""
        spacing = self.target_spacing() if target_spacing is None else target_spacing
        return median_shape_at([c.shape_after_crop for c in self.cases], [c.spacing for c in self.cases], spacing)

    def foreground_shape(self, percentile: float = 95.0) -> tuple[float, ...]:
        """Per-axis ``percentile`` of the foreground box edge lengths (voxels) over cases with foreground."""
        sizes = [bbox_shape(c.foreground_bbox) for c in self.cases if c.foreground_bbox is not None]
        if not sizes:
            raise ValueError("No case has foreground, so there is no foreground shape")
        return tuple(float(v) for v in np.percentile(np.asarray(sizes, dtype=np.float64), percentile, axis=0))

    def patch_shape(
        self,
        *,
        max_voxels: int | None = None,
        divisor: int = DEFAULT_DIVISOR,
        target_spacing: Sequence[float] | None = None,
    ) -> tuple[int, ...]:
        """Patch shape planned at ``target_spacing`` (default: the target spacing) for data at that spacing."""
        spacing = self.target_spacing() if target_spacing is None else tuple(target_spacing)
        return plan_patch_shape(self.median_shape(target_spacing=spacing), spacing, max_voxels=max_voxels,
                                divisor=divisor)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; ``derived`` repeats the planning results for readers and is ignored when loading."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "settings": dict(self.settings),
            "channel_names": list(self.channel_names),
            "labels": self.labels,
            "foreground_intensity_properties_per_channel": {
                str(c): None if s is None else s.to_dict() for c, s in enumerate(self.intensity)
            },
            "derived": self._derived(),
            "cases": [c.to_dict() for c in self.cases],
        }

    def _derived(self) -> dict[str, Any]:
        derived: dict[str, Any] = {"target_spacing": list(self.target_spacing()),
                                   "median_shape": list(self.median_shape())}
        has_foreground = any(c.foreground_bbox is not None for c in self.cases)
        derived["foreground_shape_p95"] = list(self.foreground_shape()) if has_foreground else None
        derived["patch_shape"] = list(self.patch_shape())
        return derived

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, dataset: Any = None) -> InspectionAnnotations:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"Not {FORMAT} version {FORMAT_VERSION} data (format={data.get('format')!r}, "
                             f"version={data.get('version')!r}); run inspect() again to regenerate it")
        stats = data["foreground_intensity_properties_per_channel"]
        annotations = cls(
            cases=tuple(CaseAnnotation.from_dict(c) for c in data["cases"]),
            intensity=tuple(None if stats[str(c)] is None else IntensityStats.from_dict(stats[str(c)])
                            for c in range(len(stats))),
            channel_names=tuple(str(n) for n in data["channel_names"]),
            labels=None if data["labels"] is None else {str(k): int(v) for k, v in data["labels"].items()},
            settings={str(k): int(v) for k, v in data["settings"].items()},
        )
        return annotations if dataset is None else annotations.with_dataset(dataset)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the annotations as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), separators=(",", ":")) + "\n")


def load_inspection_annotations(path: str | os.PathLike[str], dataset: Any = None) -> InspectionAnnotations:
    """Read annotations written by :meth:`InspectionAnnotations.save`, optionally attached to ``dataset``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"No inspection annotations at {path}; run `candy inspect` or inspect() first") \
            from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and inspect the dataset again") from err
    try:
        return InspectionAnnotations.from_dict(data, dataset=dataset)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} does not hold valid inspection annotations ({err}); delete it and inspect the "
                         "dataset again") from err


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The random generator of one case: depends on the seed and the case id only."""
    return np.random.default_rng([seed, zlib.crc32(case_id.encode("utf-8"))])


def _check_case(case_id: str, image: Tensor, label: Tensor) -> Tensor:
    """The label as int64 after checking it against the image; errors name the case."""
    if image.ndim not in (3, 4) or label.ndim != image.ndim or label.shape[0] != 1 or \
            label.shape[1:] != image.shape[1:]:
        raise ValueError(f"case {case_id!r}: expected an image (C, *spatial) and a label (1, *spatial) on the same "
                         f"2D or 3D grid, got {tuple(image.shape)} and {tuple(label.shape)}")
    if label.is_floating_point():
        if not torch.equal(label, label.round()):
            raise ValueError(f"case {case_id!r}: the label holds non-integer values; labels are class ids")
    label = label.long()
    if label.numel() and int(label.min()) < 0:
        raise ValueError(f"case {case_id!r}: the label holds negative ids ({int(label.min())}); class ids start at 0")
    return label


def unravel(flat_index: Tensor, shape: Sequence[int]) -> Tensor:
    """(ndim, n) coordinates of C-order flat indices (``torch.unravel_index`` imports sympy: 1.5 s)."""
    coords = []
    for n in reversed(shape):
        coords.append(flat_index % n)
        flat_index = flat_index // n
    return torch.stack(coords[::-1])


def _class_extents(fg_idx: Tensor, classes: Tensor, shape: Sequence[int], num_classes: int,
                   crop_bbox: BBox) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class (min, max) coordinates, (ndim, num_classes) each, and which foreground voxels lie in the crop."""
    ndim = len(shape)
    low = torch.full((ndim, num_classes), torch.iinfo(torch.int64).max, dtype=torch.int64, device=fg_idx.device)
    high = torch.full((ndim, num_classes), -1, dtype=torch.int64, device=fg_idx.device)
    inside = torch.empty_like(fg_idx, dtype=torch.bool)
    lo = torch.tensor([b[0] for b in crop_bbox], device=fg_idx.device)[:, None]
    hi = torch.tensor([b[1] for b in crop_bbox], device=fg_idx.device)[:, None]
    for start in range(0, fg_idx.numel(), _CHUNK):
        part = slice(start, start + _CHUNK)
        coords = unravel(fg_idx[part], shape)
        ids = classes[part].expand(ndim, -1)
        low.scatter_reduce_(1, ids, coords, "amin")
        high.scatter_reduce_(1, ids, coords, "amax")
        inside[part] = ((coords >= lo) & (coords < hi)).all(dim=0)
    return low, high, inside


def _pick(count: int, limit: int, rng: np.random.Generator, *, replace: bool) -> np.ndarray | None:
    """Indices of at most ``limit`` of ``count`` items (None: take all, in order)."""
    if count <= limit:
        return None
    picked = rng.integers(0, count, limit) if replace else rng.choice(count, limit, replace=False)
    return np.sort(picked)


def inspect_case(
    case_id: str,
    image: Tensor,
    label: Tensor,
    spacing: Sequence[float],
    *,
    max_samples_per_class: int = MAX_SAMPLES_PER_CLASS,
    intensity_budget: int = INTENSITY_SAMPLES,
    seed: int = 0,
) -> tuple[CaseAnnotation, np.ndarray]:
    """Inspect one case; returns its record and (C, n) foreground intensity samples (n <= ``intensity_budget``).

    Memory beyond the case itself is a few integers per foreground voxel, transiently.
    """
    label = _check_case(case_id, image, label)
    shape = tuple(int(n) for n in image.shape[1:])
    if len(spacing) != len(shape):
        raise ValueError(f"case {case_id!r}: spacing {tuple(spacing)} does not match the {len(shape)}D image")
    rng = case_rng(seed, case_id)
    flat = label.reshape(-1)
    counts = torch.bincount(flat).tolist() if flat.numel() else [0]
    crop_bbox = nonzero_bbox(image)
    fg_idx = torch.nonzero(flat > 0).flatten()
    classes = flat[fg_idx]
    order = torch.argsort(classes, stable=True)
    fg_sorted, classes_sorted = fg_idx[order], classes[order]
    low, high, inside = _class_extents(fg_idx, classes, shape, len(counts), crop_bbox)

    present = [c for c in range(1, len(counts)) if counts[c] > 0]
    bounds = torch.searchsorted(classes_sorted, torch.arange(len(counts) + 1, device=classes_sorted.device))
    locations: dict[int, np.ndarray] = {}
    for c in present:
        group = fg_sorted[int(bounds[c]):int(bounds[c + 1])]
        picked = _pick(group.numel(), max_samples_per_class, rng, replace=False)
        chosen = group if picked is None else group[torch.from_numpy(picked).to(group.device)]
        locations[c] = unravel(chosen, shape).T.cpu().numpy().astype(np.int32)
    class_bboxes = {c: tuple((int(low[a, c]), int(high[a, c]) + 1) for a in range(len(shape))) for c in present}
    foreground_bbox = None
    if present:
        foreground_bbox = tuple((min(class_bboxes[c][a][0] for c in present),
                                 max(class_bboxes[c][a][1] for c in present)) for a in range(len(shape)))

    candidates = fg_idx[inside]
    picked = _pick(candidates.numel(), intensity_budget, rng, replace=True)
    if picked is not None:
        candidates = candidates[torch.from_numpy(picked).to(candidates.device)]
    samples = image.reshape(image.shape[0], -1)[:, candidates].cpu().numpy()
    record = CaseAnnotation(
        case_id=case_id,
        shape=shape,
        spacing=tuple(float(s) for s in spacing),
        crop_bbox=crop_bbox,
        foreground_bbox=foreground_bbox,
        class_counts={c: n for c, n in enumerate(counts) if n > 0},
        class_bboxes=class_bboxes,
        locations=locations,
    )
    return record, samples


def inspect(
    dataset: Any,
    *,
    max_samples_per_class: int = MAX_SAMPLES_PER_CLASS,
    intensity_samples: int = INTENSITY_SAMPLES,
    seed: int = 0,
    channel_names: Sequence[str] | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> InspectionAnnotations:
    """Inspect every case of a supervised ``dataset`` (items ``(image, label)``, with ``case_id(i)`` and
    ``geometry(i)``); see the module docstring for what is recorded.

    ``max_samples_per_class`` bounds the stored locations per class and case (nnU-Net keeps min(10k, all) but at
    least 1%, which grows with the volume; the 1% floor is dropped so storage stays bounded).
    ``intensity_samples`` bounds the foreground intensities kept for the whole dataset (nnU-Net: 10e7), split
    evenly over cases. ``channel_names`` defaults to the dataset's ``channel_names`` (e.g. from dataset.json).
    """
    if len(dataset) == 0:
        raise ValueError(f"Cannot inspect an empty dataset ({dataset!r})")
    if max_samples_per_class < 0 or intensity_samples < 1:
        raise ValueError("max_samples_per_class must be >= 0 and intensity_samples >= 1")
    budget = max(1, intensity_samples // len(dataset))
    records: list[CaseAnnotation] = []
    pool: IntensityPool | None = None
    with Progress(console=console, transient=True, disable=not progress) as bar:
        for i in bar.track(range(len(dataset)), description=f"Inspecting {len(dataset)} cases"):
            case_id = dataset.case_id(i) if hasattr(dataset, "case_id") else str(i)
            image, label = dataset[i]
            record, samples = inspect_case(case_id, image, label, dataset.geometry(i).spacing,
                                           max_samples_per_class=max_samples_per_class, intensity_budget=budget,
                                           seed=seed)
            if records and len(record.shape) != len(records[0].shape):
                raise ValueError(f"case {case_id!r} is {len(record.shape)}D with shape {record.shape}, but case "
                                 f"{records[0].case_id!r} is {len(records[0].shape)}D with shape {records[0].shape}; "
                                 "every case of a dataset needs the same number of dimensions (keep 2D and 3D "
                                 "cases in separate datasets)")
            pool = pool or IntensityPool(samples.shape[0])
            if samples.shape[0] != pool.num_channels:
                raise ValueError(f"case {case_id!r} has {samples.shape[0]} channels, earlier cases "
                                 f"{pool.num_channels}; every case needs the same channels")
            pool.add(samples, 1.0 / max(samples.shape[1], 1))
            records.append(record)
    assert pool is not None
    names = _channel_names(dataset, channel_names, pool.num_channels)
    labels = getattr(dataset, "labels", None)
    return InspectionAnnotations(
        cases=tuple(records),
        intensity=tuple(pool.stats()),
        channel_names=names,
        labels=dict(labels) if isinstance(labels, Mapping) else None,
        settings={"max_samples_per_class": max_samples_per_class, "intensity_samples": intensity_samples,
                  "seed": seed},
        dataset=dataset,
    )


def _channel_names(dataset: Any, names: Sequence[str] | None, num_channels: int) -> tuple[str, ...]:
    if names is None:
        declared = getattr(dataset, "channel_names", None)
        if isinstance(declared, Mapping):
            names = [str(declared[k]) for k in sorted(declared)]
        else:
            names = [f"channel_{c}" for c in range(num_channels)]
    if len(names) != num_channels:
        raise ValueError(f"Got {len(names)} channel names for images with {num_channels} channels")
    return tuple(str(n) for n in names)
