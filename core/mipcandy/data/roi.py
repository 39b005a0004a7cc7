"""Random patches with nnU-Net's foreground oversampling, one whole batch per item.

nnU-Net forces the last ``round(batch_size * 0.33)`` samples of every batch onto foreground (a random present
class, then a random stored voxel of it). The reference MIPCandy keyed this on the dataset index, so shuffling
decided which cases were ever forced. Here an item IS a batch: the forced positions are fixed inside it, and no
sampler, shuffle or worker setting can move them. Use :meth:`RandomROIDataset.loader` (or a ``DataLoader`` with
``batch_size=None`` and an :class:`EpochSampler`) so that every epoch draws new patches.

Item ``k`` depends only on ``(seed, k)``: epoch ``k // len(ds)`` permutes the cases (each appears
``num_patches_per_case`` times; the last batch wraps around to stay full), and the patch positions of batch
``k`` come from a generator seeded with ``(seed, k)``. That makes loading deterministic and safe in any number
of workers, persistent or not. Patches are read with :meth:`PreprocessedDataset.read_region` (only the bytes of
the patch) when the dataset has it, else cropped from the full case; parts beyond the image are padded with 0
(image, i.e. the normalized mean) and 0 (label, background).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mipcandy.data.augment.base import DescribedTransform, Transform
from mipcandy.data.cropping import BBox, crop
from mipcandy.data.inspection import CaseAnnotation, InspectionAnnotations, inspect


def forced_count(batch_size: int, oversample_rate: float) -> int:
    """How many samples at the end of a batch are forced onto foreground: ``batch_size * rate`` rounded half up."""
    return int(np.floor(batch_size * oversample_rate + 0.5))


def patch_start(
    shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator, center: Sequence[int] | None = None
) -> tuple[int, ...]:
    """First voxel of a patch: uniform over valid positions, or centred on ``center`` and clamped into the image.

    Valid starts run from ``min(0, n - p)`` to ``max(0, n - p)``: inside the image when it is larger than the
    patch, otherwise placing the whole image inside the patch (padding the rest). A clamped patch still contains
    ``center``.
    """
    starts = []
    for axis, (n, p) in enumerate(zip(shape, patch, strict=True)):
        low, high = min(0, n - p), max(0, n - p)
        if center is None:
            starts.append(int(rng.integers(low, high + 1)))
        else:
            starts.append(int(np.clip(int(center[axis]) - p // 2, low, high)))
    return tuple(starts)


class EpochSampler(Sampler[int]):
    """Yields the item indices of one epoch per iteration, continuing where the last one stopped.

    Its state lives in the main process, so it works with persistent workers. ``set_epoch`` jumps (e.g. on
    resume).
    """

    def __init__(self, length: int, *, epoch: int = 0) -> None:
        self.length = length
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield epoch ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        # A generator: the epoch advances when iteration starts, not on iter() (DataLoader calls it twice).
        start = self.epoch * self.length
        self.epoch += 1
        yield from range(start, start + self.length)


class RandomROIDataset(Dataset):
    """Random patch batches ``(images (B, C, *patch), labels (B, 1, *patch))`` with foreground oversampling.

    Labels keep the dataset's integer dtype (``uint8`` from a preprocessing cache): a batch crossing from a
    DataLoader worker then weighs far less than with ``int64``. Widen it on the device (the trainer does).

    ``source`` is :class:`InspectionAnnotations` attached to the dataset they describe (the locations must be in
    its voxel coordinates: inspect the preprocessed dataset you train on), or such a dataset, which is then
    inspected. ``patch_shape`` defaults to the annotations' planned patch shape
    (:meth:`InspectionAnnotations.patch_shape`). ``len()`` is the number of batches per epoch:
    ``ceil(cases * num_patches_per_case / batch_size)``; any index >= 0 is valid (later epochs).

    ``augmentation`` (e.g. :class:`~mipcandy.data.augment.pipeline.NNUNetAugmentation`) runs on each whole batch,
    in the worker that built it, with a generator seeded from ``(seed, index)``: augmented batches are as
    reproducible as the patches, whatever the number of workers.
    """

    def __init__(
        self,
        source: InspectionAnnotations | Any,
        batch_size: int,
        *,
        oversample_rate: float = 0.33,
        num_patches_per_case: int = 1,
        patch_shape: Sequence[int] | None = None,
        augmentation: Transform | None = None,
        seed: int = 0,
    ) -> None:
        annotations = source if isinstance(source, InspectionAnnotations) else inspect(source, progress=False)
        if annotations.dataset is None:
            raise ValueError("The annotations are not attached to a dataset; load them with "
                             "load_inspection_annotations(path, dataset) or pass the dataset itself")
        if batch_size < 1 or num_patches_per_case < 1 or not 0.0 <= oversample_rate <= 1.0:
            raise ValueError(f"Need batch_size >= 1, num_patches_per_case >= 1 and 0 <= oversample_rate <= 1, got "
                             f"{batch_size}, {num_patches_per_case} and {oversample_rate}")
        self.annotations = annotations
        self.dataset = annotations.dataset
        self.batch_size = batch_size
        self.oversample_rate = oversample_rate
        self.num_forced = forced_count(batch_size, oversample_rate)
        self.num_patches_per_case = num_patches_per_case
        self.seed = seed
        self.augmentation = augmentation
        self.patch_shape = tuple(int(p) for p in (patch_shape or annotations.patch_shape()))
        if len(self.patch_shape) != annotations.ndim or min(self.patch_shape) < 1:
            raise ValueError(f"patch_shape {self.patch_shape} must have {annotations.ndim} positive edges")
        self._dataset_index = [self.dataset.index(c) for c in annotations.case_ids]
        self._check_shapes()
        has_foreground = any(n for r in annotations.cases for c, n in r.class_counts.items() if c > 0)
        if self.num_forced and has_foreground and not any(r.foreground_classes for r in annotations.cases):
            raise ValueError("The annotations hold no foreground locations (inspected with max_samples_per_class=0?), "
                             "so foreground oversampling is impossible; inspect with max_samples_per_class > 0")

    def _check_shapes(self) -> None:
        """Fail early when the annotations describe other tensors than the dataset holds (cheap with a cache)."""
        shape_of = getattr(self.dataset, "spatial_shape", None)
        if shape_of is None:
            return
        for record, i in zip(self.annotations.cases, self._dataset_index, strict=True):
            if tuple(shape_of(i)) != record.shape:
                raise ValueError(f"case {record.case_id!r}: annotated shape {record.shape} differs from the dataset's "
                                 f"{tuple(shape_of(i))}; the annotations are stale, inspect the dataset again")

    def __len__(self) -> int:
        return -(-len(self.annotations) * self.num_patches_per_case // self.batch_size)

    def _cases_of(self, index: int) -> np.ndarray:
        """Annotation indices of the cases in batch ``index``."""
        epoch, position = divmod(index, len(self))
        order = np.tile(np.arange(len(self.annotations)), self.num_patches_per_case)
        order = np.random.default_rng([self.seed, 0, epoch]).permutation(order)
        order = np.resize(order, len(self) * self.batch_size)
        return order[position * self.batch_size:(position + 1) * self.batch_size]

    def forced(self, slot: int) -> bool:
        """Whether position ``slot`` of a batch is forced onto foreground."""
        return slot >= self.batch_size - self.num_forced

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if index < 0:
            raise IndexError(f"Batch index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, 1, index])
        images: Tensor | None = None
        labels: Tensor | None = None
        for slot, case in enumerate(self._cases_of(index)):
            region, target = self._region(self.annotations.cases[case], rng, self.forced(slot))
            image, label = self._read(self._dataset_index[case], region)
            if images is None:  # one buffer per batch; each patch is copied into it once
                images = torch.empty((self.batch_size, image.shape[0], *self.patch_shape), dtype=torch.float32,
                                     device=image.device)
                labels = torch.empty((self.batch_size, 1, *self.patch_shape), dtype=label.dtype, device=image.device)
            if image.shape[1:] != self.patch_shape:  # the patch reaches beyond the image: pad with 0
                images[slot].zero_()
                labels[slot].zero_()
            images[slot][target].copy_(image)
            labels[slot][target].copy_(label)
        if self.augmentation is not None:
            generator = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, 2, index]).integers(2**62)))
            images, labels = self.augmentation(images, labels, generator)
        return images, labels

    def _region(self, record: CaseAnnotation, rng: np.random.Generator, forced: bool) -> tuple[BBox, tuple[slice, ...]]:
        """The part of the image a patch covers, and where it lands inside the patch."""
        center = None
        classes = record.foreground_classes
        if forced and classes:
            locations = record.locations[classes[int(rng.integers(len(classes)))]]
            center = locations[int(rng.integers(len(locations)))]
        start = patch_start(record.shape, self.patch_shape, rng, center)
        inside: BBox = tuple((max(s, 0), min(s + p, n)) for s, p, n in zip(start, self.patch_shape, record.shape,
                                                                          strict=True))
        target = (slice(None), *(slice(a - s, b - s) for (a, b), s in zip(inside, start, strict=True)))
        return inside, target

    def _read(self, i: int, bbox: BBox) -> tuple[Tensor, Tensor]:
        read_region = getattr(self.dataset, "read_region", None)
        if read_region is not None:
            return read_region(i, bbox)
        image, label = self.dataset[i]
        return crop(image, bbox), crop(label, bbox)

    def settings(self) -> dict[str, Any]:
        """How patches are drawn (JSON, for the experiment record): patch size, batch, oversampling, seed, and the
        augmentation's ``settings`` when it declares them."""
        augmentation = self.augmentation
        return {"patch_size": list(self.patch_shape), "batch_size": self.batch_size,
                "oversample_rate": self.oversample_rate, "num_patches_per_case": self.num_patches_per_case,
                "seed": self.seed, "augmentation": None if augmentation is None else {
                    "transform": type(augmentation).__name__,
                    "settings": augmentation.settings if isinstance(augmentation, DescribedTransform) else None}}

    def loader(self, **kwargs: Any) -> DataLoader:
        """A ``DataLoader`` yielding these batches with fresh patches every epoch (kwargs: workers, pinning...)."""
        for name in ("batch_size", "shuffle", "sampler", "batch_sampler"):
            if name in kwargs:
                raise ValueError(f"RandomROIDataset items are whole batches; do not pass {name!r} to loader()")
        return DataLoader(self, batch_size=None, sampler=EpochSampler(len(self)), **kwargs)
