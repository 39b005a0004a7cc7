"""Synthetic segmentation datasets in nnU-Net raw format, for demos, tests and benchmarks without downloads.

Each case is a body (ellipse/ellipsoid) holding randomly placed, rotated and sized objects, one shape family per
class (ellipsoids, boxes, tori/annuli in turn), painted in class order so that later classes cover earlier ones.
Intensities depend on the class and channel, with per-case contrast jitter, Gaussian noise, a smooth
multiplicative bias field (MRI) and anisotropic spacing. Everything is vectorized in torch and deterministic under
the seed: case ``i`` depends only on ``(seed, i)`` and the dataset settings.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from functools import reduce
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import Tensor

from mipcandy.data.export import require_empty_folder, write_case, write_dataset_json
from mipcandy.data.geometry import Geometry

Modality = Literal["MRI", "CT"]
SHAPES = ("ellipsoid", "box", "torus")
MIN_VOXELS = 4  # each foreground class must cover at least this many voxels in every case (by default)
_MAX_TRIES = 100
OBJECT_SCALE = (0.2, 0.35)  # object size range, a fraction of the body's smallest semi-axis
BIAS_STRENGTH = 0.25  # standard deviation of the log of the MRI bias field


def _rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix, sign-corrected)."""
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _shape_mask(kind: str, local: Sequence[Tensor], semi_axes: Sequence[float]) -> Tensor:
    """Inside-test of a shape centred at the origin, given its local coordinates along each of its axes."""
    if kind == "ellipsoid":
        return sum((u / a) ** 2 for u, a in zip(local, semi_axes, strict=True)) <= 1
    if kind == "box":
        return reduce(torch.logical_and, [u.abs() <= a for u, a in zip(local, semi_axes, strict=True)])
    # Torus (3D) or annulus (2D): a tube of radius ``minor`` around a ring in the plane of the last two axes.
    major = float(np.mean(semi_axes[-2:])) * 0.7
    minor = major * 0.45
    distance = (torch.sqrt(local[-2] ** 2 + local[-1] ** 2) - major) ** 2
    if len(local) == 3:
        distance = distance + local[0] ** 2
    return distance <= minor**2


def _open_grid(axes: Sequence[Tensor]) -> list[Tensor]:
    """Each coordinate vector reshaped to broadcast over the grid the vectors span (like ``np.ogrid``)."""
    return [a.reshape([-1 if i == j else 1 for j in range(len(axes))]) for i, a in enumerate(axes)]


def _layout(rng: np.random.Generator, axes: Sequence[Tensor], num_classes: int,
            object_scale: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Label map (1-2 objects per class painted in class order inside a body) and the body mask.

    ``axes`` are the physical coordinates of the voxel centres along each axis. Each object is evaluated only in
    its bounding box, so the cost scales with the objects, not the volume.
    """
    ndim = len(axes)
    half = np.array([float(a[-1]) for a in axes])
    body_axes = half * rng.uniform(0.8, 0.95, ndim)
    body = _shape_mask("ellipsoid", _open_grid(axes), body_axes)
    label = torch.zeros(body.shape, dtype=torch.int64)
    for k in range(1, num_classes):
        for _ in range(1 + int(rng.random() < 0.3)):
            semi_axes = body_axes.min() * rng.uniform(*object_scale) * rng.uniform(0.7, 1.3, ndim)
            reach = 1.05 * semi_axes.max()  # bounds every shape family, the torus' ring included
            centre = np.clip(body_axes * 0.8 - reach, 0, None) * rng.uniform(-1, 1, ndim)
            rotation = _rotation(rng, ndim)
            box = tuple(
                slice(int(torch.searchsorted(a, c - reach)), int(torch.searchsorted(a, c + reach, right=True)))
                for a, c in zip(axes, centre, strict=True)
            )
            offsets = _open_grid([a[b] - c for a, b, c in zip(axes, box, centre, strict=True)])
            local = [sum(offsets[i] * float(rotation[i, j]) for i in range(ndim)) for j in range(ndim)]
            kind = SHAPES[(k - 1) % len(SHAPES)]
            label[box][_shape_mask(kind, local, semi_axes) & body[box]] = k
    return label, body


def _bias_field(rng: np.random.Generator, shape: Sequence[int], strength: float) -> Tensor:
    """A smooth multiplicative field around 1: a coarse random grid upsampled (bi/trilinear)."""
    coarse = torch.from_numpy(rng.normal(0.0, strength, (1, 1) + (4,) * len(shape))).float()
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return torch.exp(F.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=True))[0, 0]


def class_intensities(num_classes: int, num_channels: int, modality: Modality, seed: int) -> Tensor:
    """(num_channels, num_classes + 1) mean intensity of air (column 0), tissue (1) and each foreground class.

    Fixed per dataset (so the task is learnable); each channel orders the classes differently.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC1A55]))
    if modality == "CT":
        air, levels = -1000.0, np.linspace(-120.0, 400.0, num_classes)
    else:
        air, levels = 0.0, np.linspace(60.0, 220.0, num_classes)
    rows = [np.concatenate([[air], rng.permutation(levels)]) for _ in range(num_channels)]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def synthetic_case(
    index: int,
    *,
    shape: Sequence[int],
    spacing: Sequence[float],
    num_classes: int,
    num_channels: int = 1,
    modality: Modality = "MRI",
    seed: int = 0,
    object_scale: tuple[float, float] = OBJECT_SCALE,
    bias_strength: float = BIAS_STRENGTH,
    min_voxels: int = MIN_VOXELS,
) -> tuple[Tensor, Tensor]:
    """Case ``index`` of the synthetic dataset: a (C, *shape) float32 image and a (1, *shape) int64 label.

    Every foreground class covers at least ``min_voxels`` voxels (layouts are redrawn until it does: later classes
    are painted over earlier ones, which can all but hide an object). An object's semi-axes are drawn from
    ``object_scale`` (a range, as a fraction of the body's smallest semi-axis), then stretched by 0.7-1.3 per axis.
    ``bias_strength`` is the standard deviation of the MRI bias field's log (0 turns it off).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    axes = [(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    for _ in range(_MAX_TRIES):
        label, body = _layout(rng, axes, num_classes, object_scale)
        if bool((torch.bincount(label.flatten(), minlength=num_classes)[1:] >= min_voxels).all()):
            break
    else:
        raise ValueError(f"Could not fit {num_classes - 1} foreground classes of at least {min_voxels} voxels each "
                         f"into shape {tuple(shape)}; use a larger shape or larger objects (object_scale), fewer "
                         "classes or a smaller min_voxels")
    region = torch.where(label > 0, label + 1, body.long())  # 0 air, 1 tissue, k + 1 class k
    means = class_intensities(num_classes, num_channels, modality, seed)
    contrast = torch.from_numpy(rng.uniform(0.9, 1.1, (num_channels, 1))).float()
    image = (means * contrast)[:, region]
    noise = torch.from_numpy(rng.standard_normal(image.shape, dtype=np.float32))
    if modality == "CT":
        image = image + 15.0 * noise
    else:  # magnitude MRI: bias field on the signal, non-negative noisy magnitude
        image = (image * _bias_field(rng, shape, bias_strength) + 8.0 * noise).abs()
    return image, label[None]


def make_synthetic_dataset(
    folder: str | os.PathLike[str],
    *,
    ndim: int = 3,
    num_cases: int = 8,
    shape: Sequence[int] | None = None,
    num_classes: int = 3,
    num_test_cases: int = 0,
    spacing: Sequence[float] | None = None,
    seed: int = 0,
    modality: Modality = "MRI",
    num_channels: int = 1,
    object_scale: tuple[float, float] = OBJECT_SCALE,
    bias_strength: float = BIAS_STRENGTH,
    min_voxels: int = MIN_VOXELS,
    progress: bool = True,
) -> Path:
    """Write a synthetic nnU-Net raw dataset (imagesTr/labelsTr, plus imagesTs/labelsTs for held-out cases).

    ``shape`` defaults to 48^3 (3D) or 64^2 (2D); ``spacing`` (tensor axis order) to (2, 1, 1) mm in 3D, which is
    anisotropic like most clinical scans, and (1, 1) in 2D. ``num_classes`` counts the background. ``object_scale``,
    ``bias_strength`` and ``min_voxels`` are as in :func:`synthetic_case`. ``folder`` must be new or empty; returns
    it.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    shape = tuple(shape) if shape is not None else (48, 48, 48) if ndim == 3 else (64, 64)
    spacing = tuple(spacing) if spacing is not None else (2.0, 1.0, 1.0) if ndim == 3 else (1.0, 1.0)
    if len(shape) != ndim or len(spacing) != ndim:
        raise ValueError(f"A {ndim}D dataset needs {ndim} shape and spacing values, got {shape} and {spacing}")
    if modality not in ("MRI", "CT"):
        raise ValueError(f"modality must be 'MRI' or 'CT', got {modality!r}")
    if num_classes < 2 or num_channels < 1 or num_cases < 1 or num_test_cases < 0:
        raise ValueError("Need num_classes >= 2 (background included), num_channels >= 1, num_cases >= 1 and "
                         "num_test_cases >= 0")
    if not 0 < object_scale[0] <= object_scale[1] or bias_strength < 0 or min_voxels < 1:
        raise ValueError(f"Need 0 < object_scale[0] <= object_scale[1], bias_strength >= 0 and min_voxels >= 1, got "
                         f"{tuple(object_scale)}, {bias_strength} and {min_voxels}")
    root = require_empty_folder(folder)
    geometry = Geometry.identity(ndim, spacing)
    total = num_cases + num_test_cases
    for index in track(range(total), description=f"Generating {total} synthetic cases", disable=not progress):
        image, label = synthetic_case(index, shape=shape, spacing=spacing, num_classes=num_classes,
                                      num_channels=num_channels, modality=modality, seed=seed,
                                      object_scale=object_scale, bias_strength=bias_strength,
                                      min_voxels=min_voxels)
        write_case(root, f"case_{index:03d}", image, label, geometry, split="Tr" if index < num_cases else "Ts")
    names = ["background"] + [f"{SHAPES[(k - 1) % len(SHAPES)]}_{(k - 1) // len(SHAPES) + 1}"
                              for k in range(1, num_classes)]
    write_dataset_json(
        root,
        name="Synthetic",
        channel_names=dict.fromkeys(range(num_channels), modality),
        labels={name: k for k, name in enumerate(names)},
        num_training=num_cases,
        file_ending=".nii.gz",
        description=f"mipcandy synthetic dataset (seed={seed}, shape={list(shape)}, spacing={list(spacing)})",
    )
    return root
