"""3D affine resampling on the CPU through torch's vectorised 2D sampler.

On the CPU, torch's ``grid_sample`` has a vectorised kernel for 2D inputs only; its 3D kernel is scalar and several
times slower per voxel. Here a volume ``(C, D, H, W)`` is laid out as a mosaic: a 2D image of ``(H, W)`` tiles, one
per slice along the first axis, with a zero row and column between tiles. Trilinear interpolation at ``(z, y, x)``
is the blend along z of two bilinear samples at ``(y, x)``, in the tiles of slices ``floor(z)`` and ``floor(z) + 1``;
nearest-neighbour sampling picks the nearer of two nearest samples. Both samples come from one 2D call over two
mosaics, the second shifted by one slice, so that they share one grid. Coordinates are clamped to one voxel outside
the volume, where there are only zeros (the separators, and an empty tile before the first slice and after the
last), which gives ``grid_sample``'s zero padding exactly.

The output is produced in chunks of slices small enough for the coordinate passes to stay in cache, and every
volume of a sample (image, label) is read through the same grid.

Accuracy: grid_sample takes normalised coordinates, so in float32 a sample position is accurate to about
``1e-7 * sqrt(D * H * W)`` voxels (1.5e-4 for 128^3; ``F.grid_sample``'s 3D kernel: about ``1e-7 * max(D, H, W)``),
which moves a nearest-neighbour pick only for positions that close to the midpoint between two voxels. In float64
both are exact to rounding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Mode", "affine_resample"]

Shape3 = tuple[int, int, int]
Mode = Literal["linear", "nearest"]
# Output voxels per chunk: few enough for the dozen passes over its coordinates to stay in cache, enough that the
# per-chunk Python overhead stays small.
_CHUNK = 1 << 18


class _Mosaic:
    """Where each slice of a ``(D, H, W)`` volume sits in the 2D mosaic, and how the two shifted mosaics share memory.

    Tile j (row ``j // columns``, column ``j % columns``) holds slice j - 1. Every tile row carries one extra tile at
    its end, a copy of the first tile of the next row, so that the second mosaic (tile j holding slice j) is the
    same memory shifted by one tile to the left: both are views of one buffer.
    """

    def __init__(self, shape: Shape3) -> None:
        depth, height, width = shape
        self.shape = shape
        tiles = depth + 2  # an empty tile before the first slice and after the last
        self.columns = max(1, round(math.sqrt(tiles * (height + 1) / (width + 1))))
        self.rows = -(-tiles // self.columns)
        self.size = (self.rows * (height + 1) + 1, self.columns * (width + 1) + 1)

    def images(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """(2, C, *size) mosaics of ``x`` (C, D, H, W), the first with slice j - 1 in tile j, the second slice j.

        Every pixel of the buffer is written once: slices into their tiles, zeros into separators and empty tiles.
        """
        channels, depth, height, width = x.shape
        rows, columns = self.size
        buffer = torch.empty((channels, rows, columns + width + 1), dtype=dtype, device=x.device)
        buffer[:, ::height + 1, :] = 0
        buffer[:, :, ::width + 1] = 0
        tiles = buffer[:, 1:, 1:].view(channels, self.rows, height + 1, self.columns + 1, width + 1)
        for row in range(self.rows):
            target = tiles[:, row, :height, :, :width]  # (C, H, tile columns + 1, W), tile j = row * columns + k
            start = min(max(1 - row * self.columns, 0), self.columns + 1)
            stop = min(max(1 + depth - row * self.columns, 0), self.columns + 1)
            target[:, :, :start] = 0
            target[:, :, stop:] = 0
            if start < stop:
                first = row * self.columns + start - 1
                target[:, :, start:stop].copy_(x[:, first:first + stop - start].transpose(1, 2))
        channel, row_stride, _ = buffer.stride()
        return buffer.as_strided((2, channels, rows, columns), (width + 1, channel, row_stride, 1))


def _plane(coefficients: Tensor, offset: float, depths: range, height: int) -> Tensor:
    """``c0 * i + c1 * j + offset`` for output slices ``depths`` and rows ``j`` (float64, small)."""
    i = torch.arange(depths.start, depths.stop, dtype=torch.float64)
    j = torch.arange(height, dtype=torch.float64)
    return (coefficients[0] * i).view(-1, 1) + (coefficients[1] * j).view(1, -1) + offset


class _Coordinates:
    """Per output chunk: the 2D grid into the mosaics and the position between the two slices (0 to 1)."""

    def __init__(self, matrix: Tensor, offset: Tensor, mosaic: _Mosaic, out_shape: Shape3, dtype: torch.dtype) -> None:
        depth, height, width = mosaic.shape
        rows, columns = mosaic.size
        self.mosaic, self.out_shape, self.dtype = mosaic, out_shape, dtype
        # z shifted by one (tile j holds slice j - 1); y and x as normalised mosaic coordinates (align_corners=False:
        # u = (2p + 1) / n - 1) inside tile 0, whose first pixel is at 1. Each is clamped to one voxel outside the
        # volume: the zero tiles and separators.
        self.axes = [(matrix[0], float(offset[0]) + 1.0, 0.0, depth + 1.0)]
        for axis, size, extent in ((1, rows, height), (2, columns, width)):
            scale = 2.0 / size
            self.axes.append((matrix[axis] * scale, (float(offset[axis]) + 1.5) * scale - 1, 0.5 * scale - 1,
                              (extent + 1.5) * scale - 1))
        self.tile_step = ((height + 1) * 2.0 / rows, (width + 1) * 2.0 / columns)
        corners = torch.cartesian_prod(*[torch.tensor([0.0, n - 1.0], dtype=torch.float64) for n in out_shape])
        self.needs_clamp = []
        for coefficients, shift, low, high in self.axes:
            values = corners @ coefficients + shift
            self.needs_clamp.append(bool(values.min() < low or values.max() > high))

    def _field(self, axis: int, depths: range) -> Tensor:
        coefficients, shift, low, high = self.axes[axis]
        out_height, out_width = self.out_shape[1:]
        plane = _plane(coefficients, shift, depths, out_height).to(self.dtype)
        row = (coefficients[2] * torch.arange(out_width, dtype=torch.float64)).to(self.dtype)
        field = torch.add(plane.view(len(depths), out_height, 1), row.view(1, 1, out_width))
        return field.clamp_(low, high) if self.needs_clamp[axis] else field

    def chunk(self, depths: range) -> tuple[Tensor, Tensor]:
        """Grid (1, n * H', W', 2) and blend weight (n * H', W') for output slices ``depths``."""
        out_height, out_width = self.out_shape[1:]
        z = self._field(0, depths)
        tile = z.floor()
        weight = z.sub_(tile)
        tile_row = torch.add(tile, 0.5).mul_(1.0 / self.mosaic.columns).floor_()  # exact: tile + 0.5 is no multiple
        tile_column = tile.sub_(tile_row, alpha=self.mosaic.columns)  # small integers: exact before scaling
        grid = torch.empty((len(depths), out_height, out_width, 2), dtype=self.dtype)
        torch.add(self._field(1, depths), tile_row, alpha=self.tile_step[0], out=grid[..., 1])
        torch.add(self._field(2, depths), tile_column, alpha=self.tile_step[1], out=grid[..., 0])
        return grid.view(1, -1, out_width, 2), weight.view(-1, out_width)


def affine_resample(sources: Sequence[Tensor], targets: Sequence[Tensor], modes: Sequence[Mode], matrix: Tensor,
                    offset: Tensor, dtype: torch.dtype = torch.float32) -> None:
    """Fill each ``(C, *out_shape)`` target with its ``(C, D, H, W)`` CPU source sampled at ``matrix @ o + offset``.

    ``o`` runs over the output voxels; positions are in input voxels, tensor-axis order, voxel centres at integers.
    Outside the input everything is 0, as ``F.grid_sample(padding_mode="zeros", align_corners=False)``. ``"linear"``
    is trilinear, computed in ``dtype``; ``"nearest"`` copies values (exactly: integers up to 2^24 in float32). A
    target may share memory with a source: all sources are read before the first target is written.
    """
    out_shape: Shape3 = tuple(targets[0].shape[1:])  # type: ignore[assignment]
    mosaic = _Mosaic(tuple(sources[0].shape[1:]))  # type: ignore[arg-type]
    coordinates = _Coordinates(matrix.to(torch.float64), offset.to(torch.float64), mosaic, out_shape, dtype)
    mosaics = [mosaic.images(source, dtype) for source in sources]
    out_depth, out_height, out_width = out_shape
    step = max(1, _CHUNK // (out_height * out_width))
    for start in range(0, out_depth, step):
        stop = min(start + step, out_depth)
        grid, weight = coordinates.chunk(range(start, stop))
        for pair_of_mosaics, target, mode in zip(mosaics, targets, modes, strict=True):
            pair = F.grid_sample(pair_of_mosaics, grid.expand(2, -1, -1, -1), padding_mode="zeros",
                                 mode="bilinear" if mode == "linear" else "nearest", align_corners=False)
            chunk = target[:, start:stop].view(target.shape[0], -1, out_width)
            if mode == "nearest":
                chunk.copy_(torch.where(weight >= 0.5, pair[1], pair[0]))
            elif chunk.dtype == dtype:
                torch.lerp(pair[0], pair[1], weight, out=chunk)
            else:
                chunk.copy_(pair[0].lerp_(pair[1], weight))
