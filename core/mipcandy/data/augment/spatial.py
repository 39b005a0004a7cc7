"""Geometric transforms of nnU-Net's default set: rotation + scaling through one affine grid, and mirroring."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mipcandy.data.augment.base import (
    check_axes,
    check_batch,
    check_bounds,
    check_probability,
    read_rows,
    rows_of,
    update_rows,
    write_rows,
)
from mipcandy.data.augment.mosaic import Mode, affine_resample
from mipcandy.data.augment.sampling import bernoulli, uniform


def rotation_matrices(angles: Tensor, ndim: int, axes: tuple[int, ...]) -> Tensor:
    """(N, ndim, ndim) rotations in tensor-axis order from radians (N, 1) for a plane or (N, 3) for a volume.

    With three angles, angle k turns the plane of the two axes other than ``axes[k]``; the product is taken in axis
    order. Axes outside ``axes`` stay fixed (nnU-Net's dummy 2D rotates in the (H, W) plane only).
    """
    n = angles.shape[0]
    eye = torch.eye(ndim, dtype=angles.dtype).expand(n, ndim, ndim)
    planes = [axes] if len(axes) == 2 else [tuple(a for a in axes if a != fixed) for fixed in axes]
    result = eye.clone()
    for k, (i, j) in enumerate(planes):
        cos, sin = torch.cos(angles[:, k]), torch.sin(angles[:, k])
        rotation = eye.clone()
        rotation[:, i, i], rotation[:, i, j], rotation[:, j, i], rotation[:, j, j] = cos, -sin, sin, cos
        result = result @ rotation
    return result


def affine_grid(theta: Tensor, size: tuple[int, ...]) -> Tensor:
    """Same as ``F.affine_grid(theta, (N, 1, *size), align_corners=False)``, several times faster on CPU.

    ``theta`` is (N, ndim, ndim + 1) in grid_sample's (x, y[, z]) order. Each grid component is a sum of
    outer-broadcast 1D terms, so it costs one full-size add and one strided copy instead of a batched matmul.
    """
    n, ndim = theta.shape[0], len(size)
    grid = torch.empty((n, *size, ndim), dtype=theta.dtype, device=theta.device)
    coords = []
    for j, length in enumerate(reversed(size)):  # xyz axis j runs along tensor axis ndim - 1 - j
        shape = [1] * (ndim + 1)
        shape[ndim - j] = length
        coords.append(((torch.arange(length, dtype=theta.dtype, device=theta.device) * 2 + 1) / length - 1)
                      .view(shape))
    column = (n, *[1] * ndim)
    for i in range(ndim):
        acc = theta[:, i, ndim].view(column)
        for j in range(ndim):  # x first: the full-size tensor appears only at the last (slowest) axis
            acc = acc + theta[:, i, j].view(column) * coords[j]
        grid[..., i] = acc
    return grid


def grid_sample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    """``F.grid_sample`` (zeros outside, align_corners=False) that keeps every CPU thread busy.

    torch's CPU kernel parallelises over the batch only, so one drawn sample would run on one thread; on CPU each
    sample is therefore cut into slabs along the first output axis, passed as a batch over an expanded (not copied)
    input. Results are bit-identical to the plain call.
    """
    threads = torch.get_num_threads()
    n, depth = grid.shape[0], grid.shape[1]
    if x.device.type != "cpu" or n >= threads or depth == 1:
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    slabs = next(k for k in range(min(threads, depth), depth + 1) if depth % k == 0)
    out = x.new_empty((n, x.shape[1], *grid.shape[1:-1]))
    for sample, sample_grid, target in zip(x.split(1), grid.split(1), out.split(1), strict=True):
        parts = F.grid_sample(sample.expand(slabs, *sample.shape[1:]),
                              sample_grid.view(slabs, depth // slabs, *grid.shape[2:]),
                              mode=mode, padding_mode="zeros", align_corners=False)
        target.view(x.shape[1], slabs, depth // slabs, *grid.shape[2:-1]).copy_(parts.transpose(0, 1))
    return out


def _center_start(size: tuple[int, ...], patch: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s // 2 - p // 2 for s, p in zip(size, patch, strict=True))


@dataclass(frozen=True)
class SpatialTransform:
    """Rotation and scaling of image and label through one affine grid per sample.

    nnU-Net: rotation p 0.2 (per axis U(-30, 30) degrees in 3D, U(-180, 180) in 2D and dummy 2D), scaling p 0.2
    (one factor U(0.7, 1.4) for all axes; larger factors make objects smaller), no elastic deformation, zeros
    outside the input. The rotation acts in voxel space (nnU-Net rotates normalised coordinates, which shears
    non-cubic patches). ``rotation_degrees=None`` picks nnU-Net's range from the number of rotated axes.

    Image: bilinear. Label: ``"nearest"`` (fast, exact ids) or ``"onehot"`` (each class resampled bilinearly, then
    argmax: smoother boundaries as nnU-Net's default, at one resample per class; ``num_classes`` avoids a max over
    the label). ``patch_size`` centre-crops the output from a larger input, as nnU-Net's loader feeds an enlarged
    patch so that rotations bring in real context instead of zeros. Samples that draw neither rotation nor scaling
    are copied exactly (just cropped), with no interpolation.
    """

    p_rotation: float = 0.2
    rotation_degrees: tuple[float, float] | None = None
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)
    axes: tuple[int, ...] | None = None
    patch_size: tuple[int, ...] | None = None
    label_mode: Literal["nearest", "onehot"] = "nearest"
    num_classes: int | None = None

    def __post_init__(self) -> None:
        owner = "SpatialTransform"
        object.__setattr__(self, "p_rotation", check_probability(owner, "p_rotation", self.p_rotation))
        object.__setattr__(self, "p_scaling", check_probability(owner, "p_scaling", self.p_scaling))
        object.__setattr__(self, "scaling", check_bounds(owner, "scaling", self.scaling, positive=True))
        if self.rotation_degrees is not None:
            object.__setattr__(self, "rotation_degrees",
                               check_bounds(owner, "rotation_degrees", self.rotation_degrees))
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        if self.label_mode not in ("nearest", "onehot"):
            raise ValueError(f"{owner}: label_mode must be 'nearest' or 'onehot', got {self.label_mode!r}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"{owner}: num_classes must be positive, got {self.num_classes}")

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        image, label = check_batch(image, label, generator, where="SpatialTransform")
        batch, _, *spatial = image.shape
        size, ndim = tuple(spatial), len(spatial)
        axes = check_axes("SpatialTransform", self.axes, ndim)
        patch = self._patch(size)
        rotate = bernoulli(self.p_rotation, batch, generator) & (len(axes) >= 2)  # one axis cannot rotate
        scale = bernoulli(self.p_scaling, batch, generator)
        angles = uniform(self._degrees(axes), (batch, 1 if len(axes) == 2 else 3), generator) * (math.pi / 180)
        factors = uniform(self.scaling, batch, generator)
        rows = rows_of(rotate | scale)
        source_image, source_label = image, label
        if patch != size:
            crop = (..., *(slice(s, s + p) for s, p in zip(_center_start(size, patch), patch, strict=True)))
            image = image[crop].contiguous()
            label = None if label is None else label[crop].contiguous()
        if not rows.numel():
            return image, label
        matrices = self._matrices(angles[rows] * rotate[rows, None], torch.where(scale[rows], factors[rows], 1.0),
                                  ndim, axes)
        if image.device.type == "cpu" and ndim == 3:
            self._resample_rows(source_image, source_label, image, label, rows, matrices, size, patch)
            return image, label
        grid = affine_grid(self._theta(matrices, size, patch).to(image.device, self._work_dtype(image)), patch)
        write_rows(image, rows, self._resample_image(read_rows(source_image, rows), grid))
        if label is not None:
            write_rows(label, rows, self._resample_label(read_rows(source_label, rows), grid))
        return image, label

    def _resample_rows(self, source_image: Tensor, source_label: Tensor | None, image: Tensor, label: Tensor | None,
                       rows: Tensor, matrices: Tensor, size: tuple[int, ...], patch: tuple[int, ...]) -> None:
        """3D on the CPU: each drawn sample through :func:`affine_resample` (torch's vectorised 2D kernel)."""
        centre = (torch.tensor(patch, dtype=torch.float64) - 1) / 2
        start = torch.tensor(_center_start(size, patch), dtype=torch.float64)
        dtype = self._work_dtype(image)
        for row, matrix in zip(rows.tolist(), matrices, strict=True):
            sources, targets = [source_image[row]], [image[row]]
            modes: list[Mode] = ["linear"]
            onehot = None
            if source_label is not None and label is not None:
                if self.label_mode == "nearest":
                    sources.append(source_label[row])
                    targets.append(label[row])
                    modes.append("nearest")
                else:  # each class resampled linearly, then the argmax
                    sources.append(self._onehot(source_label[row:row + 1], dtype)[0])
                    onehot = torch.empty((sources[-1].shape[0], *patch), dtype=dtype)
                    targets.append(onehot)
                    modes.append("linear")
            # output voxel o samples the input at start + centre + matrix (o - centre), the geometry of _theta
            affine_resample(sources, targets, modes, matrix, start + centre - matrix @ centre, dtype)
            if onehot is not None and label is not None:
                label[row] = onehot.argmax(dim=0, keepdim=True)

    def _patch(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if self.patch_size is None:
            return size
        if len(self.patch_size) != len(size) or any(p > s or p < 1 for p, s in zip(self.patch_size, size, strict=True)):
            raise ValueError(f"SpatialTransform: patch_size {self.patch_size} must have one entry per spatial axis and "
                             f"fit inside the input {size}; feed a larger patch or drop patch_size")
        return self.patch_size

    def _degrees(self, axes: tuple[int, ...]) -> tuple[float, float]:
        if self.rotation_degrees is not None:
            return self.rotation_degrees
        return (-180.0, 180.0) if len(axes) == 2 else (-30.0, 30.0)

    @staticmethod
    def _matrices(angles: Tensor, factors: Tensor, ndim: int, axes: tuple[int, ...]) -> Tensor:
        """Rotation @ scaling in tensor-axis order, mapping output voxel offsets to input voxel offsets."""
        diagonal = torch.ones(factors.shape[0], ndim, dtype=torch.float64)
        diagonal[:, list(axes)] = factors[:, None]
        rotation = rotation_matrices(angles, ndim, axes) if len(axes) >= 2 else torch.eye(ndim, dtype=torch.float64)
        return rotation @ torch.diag_embed(diagonal)

    @staticmethod
    def _theta(matrices: Tensor, size: tuple[int, ...], patch: tuple[int, ...]) -> Tensor:
        """grid_sample's normalised (xyz) affine: in = diag(1/size) A diag(patch) out + 2 shift / size.

        ``shift`` moves the output centre onto the centre of the integer crop used for undrawn samples.
        """
        size_t = torch.tensor(size, dtype=torch.float64)
        patch_t = torch.tensor(patch, dtype=torch.float64)
        shift = torch.tensor(_center_start(size, patch), dtype=torch.float64) + patch_t / 2 - size_t / 2
        linear = matrices * patch_t[None, None, :] / size_t[None, :, None]
        translation = (2 * shift / size_t).expand(matrices.shape[0], -1)
        return torch.cat([linear.flip(1, 2), translation.flip(1)[..., None]], dim=2)

    @staticmethod
    def _work_dtype(image: Tensor) -> torch.dtype:
        return image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32

    @staticmethod
    def _resample_image(x: Tensor, grid: Tensor) -> Tensor:
        return grid_sample(x.to(grid.dtype), grid, "bilinear").to(x.dtype)

    def _resample_label(self, x: Tensor, grid: Tensor) -> Tensor:
        if self.label_mode == "nearest":
            return grid_sample(x.to(grid.dtype), grid, "nearest").to(x.dtype)
        return grid_sample(self._onehot(x, grid.dtype), grid, "bilinear").argmax(dim=1, keepdim=True).to(x.dtype)

    def _onehot(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """(N, classes, *spatial) one-hot of (N, 1, *spatial) ids, checked against ``num_classes``."""
        if x.shape[1] != 1:
            raise ValueError(f"SpatialTransform: label_mode='onehot' needs one label channel, got {x.shape[1]}")
        num_classes = self.num_classes if self.num_classes is not None else int(x.max()) + 1
        if int(x.min()) < 0 or (self.num_classes is not None and int(x.max()) >= num_classes):
            raise ValueError(f"SpatialTransform: label_mode='onehot' needs ids in [0, {num_classes - 1}], got "
                             f"[{int(x.min())}, {int(x.max())}]; fix num_classes or remap the ids")
        onehot = torch.zeros((x.shape[0], num_classes, *x.shape[2:]), dtype=dtype, device=x.device)
        return onehot.scatter_(1, x.long(), 1.0)


@dataclass(frozen=True)
class Mirror:
    """Flip image and label together along each axis independently (nnU-Net: p 0.5 per axis, all axes).

    Samples are grouped by their combination of flipped axes, so a batch costs at most 2^ndim - 1 flips.
    """

    p: float = 0.5
    axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", check_probability("Mirror", "p", self.p))

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        image, label = check_batch(image, label, generator, where="Mirror")
        axes = check_axes("Mirror", self.axes, image.dim() - 2)
        flips = bernoulli(self.p, (image.shape[0], len(axes)), generator)
        codes = (flips.long() << torch.arange(len(axes))).sum(dim=1)
        for code in codes.unique().tolist():
            if code == 0:
                continue
            rows = rows_of(codes == code)
            flip = partial(torch.flip, dims=[2 + a for k, a in enumerate(axes) if code >> k & 1])
            update_rows(image, rows, flip)
            if label is not None:
                update_rows(label, rows, flip)
        return image, label
