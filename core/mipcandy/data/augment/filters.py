"""Resolution-degrading transforms of nnU-Net's default set: Gaussian blur and simulated low resolution."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mipcandy.data.augment.base import (
    check_axes,
    check_batch,
    check_bounds,
    check_probability,
    rows_of,
    update_rows,
)
from mipcandy.data.augment.sampling import bernoulli, uniform

_TRUNCATE = 3.0  # nnU-Net's kernels hold about 6 sigma + 1 taps, i.e. +-3 sigma


def gaussian_blur(x: Tensor, sigmas: Tensor) -> Tensor:
    """Separable Gaussian blur of ``x`` (N, *spatial) with one sigma per item and axis (``sigmas`` (N, ndim), CPU).

    Each axis is a weighted sum of shifted slices of the reflect-padded tensor, which on CPU is an order of magnitude
    faster than a depthwise conv3d. Every item keeps its own +-3 sigma support, so its result does not depend on the
    other items of the batch.
    """
    for axis in range(1, x.dim()):
        x = _blur_axis(x, axis, sigmas[:, axis - 1])
    return x


def _blur_axis(x: Tensor, axis: int, sigma: Tensor) -> Tensor:
    length = x.shape[axis]
    if length == 1:
        return x
    radii = torch.clamp((sigma * _TRUNCATE).round(), 1, length - 1)
    radius = int(radii.max())
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    weights = weights * (offsets.abs() <= radii[:, None])
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(device=x.device, dtype=x.dtype)
    pad = [0] * (2 * (x.dim() - 1))
    pad[2 * (x.dim() - 1 - axis)] = pad[2 * (x.dim() - 1 - axis) + 1] = radius
    padded = F.pad(x.unsqueeze(1), pad, mode="reflect").squeeze(1)
    shape = (-1, *[1] * (x.dim() - 1))
    out = padded.narrow(axis, 0, length) * weights[:, 0].view(shape)
    for k in range(1, 2 * radius + 1):
        out.addcmul_(padded.narrow(axis, k, length), weights[:, k].view(shape))
    return out


@dataclass(frozen=True)
class GaussianBlur:
    """Gaussian blur of randomly chosen channels, one sigma per channel and axis.

    nnU-Net: p 0.2 per sample, then each channel with p 0.5, sigma U(0.5, 1) drawn per channel and per axis,
    reflect borders.
    """

    p: float = 0.2
    p_per_channel: float = 0.5
    sigma: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", check_probability("GaussianBlur", "p", self.p))
        object.__setattr__(self, "p_per_channel",
                           check_probability("GaussianBlur", "p_per_channel", self.p_per_channel))
        object.__setattr__(self, "sigma", check_bounds("GaussianBlur", "sigma", self.sigma, positive=True))

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        image, label = check_batch(image, label, generator, where="GaussianBlur")
        batch, channels, *spatial = image.shape
        chosen = bernoulli(self.p, batch, generator)[:, None] & bernoulli(self.p_per_channel, (batch, channels),
                                                                            generator)
        sigmas = uniform(self.sigma, (batch * channels, len(spatial)), generator)
        rows = rows_of(chosen)
        update_rows(image.view(batch * channels, *spatial), rows, lambda x: gaussian_blur(x, sigmas[rows]))
        return image, label


@dataclass(frozen=True)
class SimulateLowResolution:
    """Downsample randomly chosen channels (nearest) and upsample them back (linear, or cubic in 2D).

    nnU-Net: p 0.25 per sample, then each channel with p 0.5, zoom U(0.5, 1) per channel shared by the axes,
    ``nearest-exact`` down and (bi/tri)linear up. ``axes`` restricts the zoom (nnU-Net's dummy-2D leaves axis 0).
    Each chosen channel gets its own downsampled shape, so this is the one transform that loops, over chosen
    channels only (0.125 per channel on average).
    """

    p: float = 0.25
    p_per_channel: float = 0.5
    zoom: tuple[float, float] = (0.5, 1.0)
    axes: tuple[int, ...] | None = None
    upsample: Literal["linear", "cubic"] = "linear"

    def __post_init__(self) -> None:
        owner = "SimulateLowResolution"
        object.__setattr__(self, "p", check_probability(owner, "p", self.p))
        object.__setattr__(self, "p_per_channel", check_probability(owner, "p_per_channel", self.p_per_channel))
        zoom = check_bounds(owner, "zoom", self.zoom, positive=True)
        if zoom[1] > 1:
            raise ValueError(f"{owner}: zoom must lie in (0, 1] (a zoom of 1 keeps the resolution), got {self.zoom!r}")
        object.__setattr__(self, "zoom", zoom)
        if self.upsample not in ("linear", "cubic"):
            raise ValueError(f"{owner}: upsample must be 'linear' or 'cubic', got {self.upsample!r}")

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        image, label = check_batch(image, label, generator, where="SimulateLowResolution")
        batch, channels, *spatial = image.shape
        axes = check_axes("SimulateLowResolution", self.axes, len(spatial))
        if self.upsample == "cubic" and len(spatial) != 2:
            raise ValueError("SimulateLowResolution: cubic upsampling exists for 2D batches only (torch has no "
                             "tricubic interpolation); use upsample='linear' for 3D")
        chosen = bernoulli(self.p, batch, generator)[:, None] & bernoulli(self.p_per_channel, (batch, channels),
                                                                            generator)
        zooms = uniform(self.zoom, batch * channels, generator)
        flat = image.view(batch * channels, 1, *spatial)
        mode = ("bilinear" if len(spatial) == 2 else "trilinear") if self.upsample == "linear" else "bicubic"
        for row in rows_of(chosen).tolist():
            zoom = float(zooms[row])
            size = [max(1, round(n * zoom)) if a in axes else n for a, n in enumerate(spatial)]
            if size == spatial:
                continue
            channel = flat[row:row + 1]
            low = F.interpolate(channel, size=size, mode="nearest-exact")
            channel.copy_(F.interpolate(low, size=spatial, mode=mode, align_corners=False))
        return image, label

