"""Composition of batched transforms, nnU-Net's default set, and seeding inside DataLoader workers.

Seeding: every call takes an explicit CPU ``torch.Generator``. Inside DataLoader workers use
:class:`AugmentingCollate` (or :func:`worker_generator` in your own ``collate_fn``): each process seeds its generator
from ``torch.initial_seed()``, which PyTorch sets to ``base_seed + worker_id`` in a worker, so workers differ from
each other and from epoch to epoch, and a run is reproducible once ``torch.manual_seed(seed)`` is called (or the
DataLoader gets ``generator=torch.Generator().manual_seed(seed)``) before iterating::

    augmentation = NNUNetAugmentation(3, inplace=True)  # the collated batch is private: skip the defensive copy
    loader = DataLoader(dataset, batch_size=2, num_workers=4, collate_fn=AugmentingCollate(augmentation))

For GPU augmentation, call the pipeline on the moved batch in the training loop with one generator created at start.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from mipcandy.data.augment.base import Transform, validate_batch
from mipcandy.data.augment.filters import GaussianBlur, SimulateLowResolution
from mipcandy.data.augment.intensity import Contrast, Gamma, GaussianNoise, MultiplicativeBrightness
from mipcandy.data.augment.spatial import Mirror, SpatialTransform

_ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's ANISO_THRESHOLD: beyond it a 3D patch gets dummy-2D augmentation


class Compose:
    """Run transforms in order on one batch; copies the input first unless ``inplace`` (transforms write in place)."""

    def __init__(self, transforms: Sequence[Transform], *, inplace: bool = False) -> None:
        self.transforms: tuple[Transform, ...] = tuple(transforms)
        self.inplace = inplace

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        validate_batch(image, label, generator, where=type(self).__name__)
        if self.inplace:
            image, label = image.contiguous(), None if label is None else label.contiguous()
        else:
            image = image.clone(memory_format=torch.contiguous_format)
            label = None if label is None else label.clone(memory_format=torch.contiguous_format)
        for transform in self.transforms:
            image, label = transform(image, label, generator)
        return image, label

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {t!r}" for t in self.transforms)
        return f"{type(self).__name__}([\n{inner}\n], inplace={self.inplace})"


class NNUNetAugmentation(Compose):
    """nnU-Net's default training augmentation (``get_training_transforms``), batched, with every knob exposed.

    Order and defaults follow nnU-Net: spatial (rotation p 0.2, scaling p 0.2 in 0.7-1.4), Gaussian noise (p 0.1),
    blur (p 0.2, each channel p 0.5, sigma 0.5-1), brightness (p 0.15, 0.75-1.25), contrast (p 0.15, 0.75-1.25, range
    kept), low resolution (p 0.25, each channel p 0.5, zoom 0.5-1), gamma on the inverted image (p 0.1) and gamma
    (p 0.3), both 0.7-1.5 with mean/std retained, mirroring (p 0.5 per axis). A probability of 0 drops the step.
    ``dummy_2d`` (3D only) confines rotation, scaling and low resolution to the (H, W) plane, as nnU-Net does for
    anisotropic patches; :meth:`for_patch_size` decides it and the rotation range from the patch like nnU-Net.
    ``settings`` holds the constructor's arguments (JSON), which the experiment record keeps. Labels are resampled
    ``"nearest"`` by default (fast); ``label_mode="onehot"`` is nnU-Net's per-class linear
    resampling. ``patch_size`` centre-crops an enlarged input patch, as nnU-Net's loader does, so that rotated
    samples see real context rather than zero borders.
    """

    def __init__(self, ndim: int, *, dummy_2d: bool = False, patch_size: Sequence[int] | None = None,
                 label_mode: Literal["nearest", "onehot"] = "nearest", num_classes: int | None = None,
                 p_rotation: float = 0.2, rotation_degrees: tuple[float, float] | None = None,
                 p_scaling: float = 0.2, scaling: tuple[float, float] = (0.7, 1.4),
                 p_noise: float = 0.1, noise_std: tuple[float, float] = (0.0, 0.1),
                 p_blur: float = 0.2, blur_p_per_channel: float = 0.5, blur_sigma: tuple[float, float] = (0.5, 1.0),
                 p_brightness: float = 0.15, brightness: tuple[float, float] = (0.75, 1.25),
                 p_contrast: float = 0.15, contrast: tuple[float, float] = (0.75, 1.25),
                 p_low_resolution: float = 0.25, low_resolution_p_per_channel: float = 0.5,
                 low_resolution_zoom: tuple[float, float] = (0.5, 1.0),
                 low_resolution_upsample: Literal["linear", "cubic"] = "linear",
                 p_gamma_inverted: float = 0.1, p_gamma: float = 0.3, gamma: tuple[float, float] = (0.7, 1.5),
                 gamma_retain_stats: bool = True,
                 p_mirror: float = 0.5, mirror_axes: Sequence[int] | None = None,
                 inplace: bool = False) -> None:
        arguments = {name: value for name, value in locals().items() if name != "self" and not name.startswith("_")}
        self.settings: dict[str, Any] = json.loads(json.dumps(arguments))
        if ndim not in (2, 3):
            raise ValueError(f"NNUNetAugmentation: ndim must be 2 or 3, got {ndim}")
        if dummy_2d and ndim != 3:
            raise ValueError("NNUNetAugmentation: dummy_2d applies to 3D patches only")
        self.ndim = ndim
        plane = (1, 2) if dummy_2d else None
        if rotation_degrees is None:
            rotation_degrees = (-180.0, 180.0) if ndim == 2 or dummy_2d else (-30.0, 30.0)
        steps: list[tuple[float, Transform]] = [
            (max(p_rotation, p_scaling), SpatialTransform(
                p_rotation, rotation_degrees, p_scaling, scaling, axes=plane,
                patch_size=None if patch_size is None else tuple(patch_size), label_mode=label_mode,
                num_classes=num_classes)),
            (p_noise, GaussianNoise(p_noise, noise_std)),
            (p_blur, GaussianBlur(p_blur, blur_p_per_channel, blur_sigma)),
            (p_brightness, MultiplicativeBrightness(p_brightness, brightness)),
            (p_contrast, Contrast(p_contrast, contrast)),
            (p_low_resolution, SimulateLowResolution(p_low_resolution, low_resolution_p_per_channel,
                                                     low_resolution_zoom, plane, low_resolution_upsample)),
            (p_gamma_inverted, Gamma(p_gamma_inverted, gamma, invert_image=True, retain_stats=gamma_retain_stats)),
            (p_gamma, Gamma(p_gamma, gamma, retain_stats=gamma_retain_stats)),
            (p_mirror, Mirror(p_mirror, None if mirror_axes is None else tuple(mirror_axes))),
        ]
        # The spatial step stays whenever it crops, even if it never rotates or scales.
        keep = [t for p, t in steps if p > 0 or (isinstance(t, SpatialTransform) and patch_size is not None)]
        super().__init__(keep, inplace=inplace)

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        if isinstance(image, Tensor) and image.dim() != self.ndim + 2:
            raise ValueError(f"NNUNetAugmentation({self.ndim}): expected a (B, C, *spatial) batch with {self.ndim} "
                             f"spatial axes, got shape {tuple(image.shape)}")
        return super().__call__(image, label, generator)

    @classmethod
    def for_patch_size(cls, patch_size: Sequence[int], **overrides: Any) -> NNUNetAugmentation:
        """nnU-Net's choice from the patch: 2D rotates +-15 degrees when the aspect exceeds 1.5 (else +-180); a 3D
        patch whose largest edge exceeds 3x its first gets dummy-2D augmentation (+-180 degrees in-plane), else
        +-30 degrees per axis. Keyword overrides win."""
        patch = tuple(int(s) for s in patch_size)
        if len(patch) == 2:
            settings: dict[str, Any] = {"rotation_degrees": (-15.0, 15.0) if max(patch) / min(patch) > 1.5
                                        else (-180.0, 180.0)}
        elif len(patch) == 3:
            dummy = max(patch) / patch[0] > _ANISOTROPY_THRESHOLD
            settings = {"dummy_2d": dummy, "rotation_degrees": (-180.0, 180.0) if dummy else (-30.0, 30.0)}
        else:
            raise ValueError(f"NNUNetAugmentation.for_patch_size: patch_size must have 2 or 3 entries, got {patch}")
        return cls(len(patch), **{**settings, **overrides})


def worker_generator() -> torch.Generator:
    """A CPU generator seeded from ``torch.initial_seed()``: per worker in a DataLoader worker, per run elsewhere."""
    return torch.Generator().manual_seed(torch.initial_seed())


class AugmentingCollate:
    """``collate_fn`` that stacks (image, label) samples and augments the batch in the worker that built it.

    The generator is (re)created whenever ``torch.initial_seed()`` changes, i.e. once per worker process, so forked
    or spawned workers never share a random stream even if the parent used this collate before.
    """

    def __init__(self, augmentation: Transform) -> None:
        self.augmentation = augmentation
        self._seed: int | None = None
        self._generator: torch.Generator | None = None

    def __call__(self, samples: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor | None]:
        image = torch.stack([s[0] for s in samples])
        label = torch.stack([s[1] for s in samples])
        return self.augmentation(image, label, self.generator())

    def generator(self) -> torch.Generator:
        """This process's generator."""
        if self._generator is None or self._seed != torch.initial_seed():
            self._seed, self._generator = torch.initial_seed(), worker_generator()
        return self._generator

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_seed": None, "_generator": None}
