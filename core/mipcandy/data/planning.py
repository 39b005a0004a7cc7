"""Dataset-level planning rules: target spacing and patch shape, after nnU-Net's ``ExperimentPlanner``.

Target spacing (nnU-Net's ``determine_fullres_target_spacing``): the per-axis median spacing. When the
coarsest median axis is anisotropic, meaning its spacing is more than ``anisotropy_threshold`` (3) times the
largest other spacing AND its median size (after cropping) times the threshold is below the smallest other
median size, that axis takes the 10th percentile of its spacings instead, but never finer than the largest other
spacing (then it becomes that spacing + 1e-5, as in nnU-Net).

Patch shape (nnU-Net's planning spirit at CPU-friendly sizes): start from the spacing aspect ratio (isotropic in
millimetres) scaled to nnU-Net's initial volume (256^3 voxels in 3D, 2048^2 in 2D), clip to the median shape
at the target spacing, round every edge up to a multiple of ``divisor`` (2^k for a network that pools k times),
then, while the volume exceeds ``max_voxels``, shrink by ``divisor`` the edge that is largest relative to the
median shape (ties: the longer edge, then the last axis). The defaults (96^3 in 3D, 256^2 in 2D) suit CPU
training; nnU-Net's GPU plans reach about 128^3 (3D) and 512^2 (2D) at 8 GB.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mipcandy.data.resample import target_shape

ANISOTROPY_THRESHOLD = 3.0
INITIAL_VOXELS: dict[int, int] = {2: 2048**2, 3: 256**3}
DEFAULT_MAX_VOXELS: dict[int, int] = {2: 256**2, 3: 96**3}
DEFAULT_DIVISOR = 16


def plan_target_spacing(
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    *,
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
) -> tuple[float, ...]:
    """nnU-Net's target spacing from per-case ``spacings`` and cropped ``shapes`` (tensor axis order)."""
    spacing_array = np.asarray(spacings, dtype=np.float64)
    shape_array = np.asarray(shapes, dtype=np.float64)
    if spacing_array.ndim != 2 or spacing_array.shape != shape_array.shape or len(spacing_array) == 0:
        raise ValueError(f"Need one spacing and one shape per case with equal dimensions, got spacings of shape "
                         f"{spacing_array.shape} and shapes of shape {shape_array.shape}")
    target = np.percentile(spacing_array, 50, axis=0)
    if len(target) < 2:
        return tuple(float(t) for t in target)
    median_size = np.percentile(shape_array, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    largest_other = max(target[i] for i in others)
    aniso_spacing = target[worst] > anisotropy_threshold * largest_other
    aniso_voxels = median_size[worst] * anisotropy_threshold < min(median_size[i] for i in others)
    if aniso_spacing and aniso_voxels:
        coarse = float(np.percentile(spacing_array[:, worst], 10))
        target[worst] = coarse if coarse >= largest_other else largest_other + 1e-5
    return tuple(float(t) for t in target)


def plan_patch_shape(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    *,
    max_voxels: int | None = None,
    divisor: int = DEFAULT_DIVISOR,
) -> tuple[int, ...]:
    """Patch shape for a dataset whose cases have ``median_shape`` voxels at ``spacing`` (see the module doc)."""
    ndim = len(median_shape)
    if ndim not in INITIAL_VOXELS or len(spacing) != ndim:
        raise ValueError(f"Need a 2D or 3D median shape with one spacing per axis, got {tuple(median_shape)} and "
                         f"{tuple(spacing)}")
    if divisor < 1:
        raise ValueError(f"divisor must be positive, got {divisor}")
    budget = DEFAULT_MAX_VOXELS[ndim] if max_voxels is None else int(max_voxels)
    aspect = [1.0 / s for s in spacing]
    scale = (INITIAL_VOXELS[ndim] / math.prod(aspect)) ** (1.0 / ndim)
    patch = [min(a * scale, float(m)) for a, m in zip(aspect, median_shape, strict=True)]
    patch = [max(divisor, math.ceil(p / divisor) * divisor) for p in patch]
    while math.prod(patch) > budget:
        shrinkable = [i for i in range(ndim) if patch[i] > divisor]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda i: (patch[i] / max(median_shape[i], 1), patch[i], i))
        patch[axis] -= divisor
    return tuple(patch)


def median_shape_at(
    shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]], target_spacing: Sequence[float]
) -> tuple[float, ...]:
    """Per-axis median of the case shapes once resampled to ``target_spacing`` (nnU-Net's ``compute_new_shape``)."""
    resampled = [target_shape(shape, spacing, target_spacing) for shape, spacing in zip(shapes, spacings, strict=True)]
    return tuple(float(v) for v in np.median(np.asarray(resampled, dtype=np.float64), axis=0))
