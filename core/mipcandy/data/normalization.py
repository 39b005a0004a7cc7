"""Per-channel intensity normalization, chosen from ``dataset.json``'s channel names as nnU-Net does.

- ``CT``: clip to the dataset's foreground 0.5 / 99.5 percentiles, subtract the dataset's foreground mean and
  divide by its foreground std (one transform for every case, so Hounsfield units keep their meaning);
- ``noNorm`` (or ``none``): unchanged;
- ``rescale_to_0_1``: per case, ``(x - min) / (max - min)``;
- ``rgb_to_0_1``: ``x / 255`` (values must lie in [0, 255]);
- anything else (``zscore``, ``MRI``, ``T2``...): per-case z-score, ``(x - mean) / std`` (population std).

Names match case-insensitively. Divisions are guarded with nnU-Net's epsilon (1e-8).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mipcandy.data.intensity_stats import IntensityStats

SCHEMES: tuple[str, ...] = ("ct", "nonorm", "zscore", "rescale_to_0_1", "rgb_to_0_1")
_ALIASES: dict[str, str] = {"none": "nonorm"}
EPSILON = 1e-8


def normalization_scheme(channel_name: str) -> str:
    """The scheme a channel name selects (one of :data:`SCHEMES`); unknown names mean per-case z-score."""
    name = channel_name.casefold()
    name = _ALIASES.get(name, name)
    return name if name in SCHEMES else "zscore"


def normalization_schemes(channel_names: Mapping[int, str] | Sequence[str]) -> tuple[str, ...]:
    """Schemes of all channels, in channel order (accepts ``dataset.json``'s index -> name mapping)."""
    names = [channel_names[i] for i in sorted(channel_names)] if isinstance(channel_names, Mapping) else channel_names
    return tuple(normalization_scheme(str(name)) for name in names)


def normalize_channel(x: Tensor, scheme: str, stats: IntensityStats | None = None) -> Tensor:
    """Normalize one channel (any shape, float) with ``scheme``; ``stats`` are required for ``ct`` only."""
    if scheme == "nonorm":
        return x
    if scheme == "ct":
        if stats is None:
            raise ValueError("CT normalization needs the dataset's foreground intensity statistics, but none were "
                             "given (no case has foreground?); pass annotations or use another channel name")
        return (x.clamp(stats.percentile_00_5, stats.percentile_99_5) - stats.mean) / max(stats.std, EPSILON)
    if scheme == "zscore":
        std, mean = torch.std_mean(x, correction=0)
        return (x - mean) / std.clamp(min=EPSILON)
    if scheme == "rescale_to_0_1":
        low = x.min()
        return (x - low) / (x.max() - low).clamp(min=EPSILON)
    if scheme == "rgb_to_0_1":
        if x.numel() and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"rgb_to_0_1 expects values in [0, 255], got [{float(x.min())}, {float(x.max())}]; "
                             "rename the channel to pick another normalization")
        return x / 255.0
    raise ValueError(f"Unknown normalization scheme {scheme!r}; use one of {SCHEMES}")


def normalize(
    image: Tensor, schemes: Sequence[str], stats: Sequence[IntensityStats | None] | None = None
) -> Tensor:
    """Normalize each channel of ``image`` (C, *spatial) with its scheme; returns a new float32 tensor."""
    if len(schemes) != image.shape[0]:
        raise ValueError(f"Got {len(schemes)} normalization schemes for an image with {image.shape[0]} channels")
    stats = list(stats) if stats is not None else [None] * len(schemes)
    if len(stats) != len(schemes):
        raise ValueError(f"Got {len(stats)} intensity statistics for {len(schemes)} channels")
    image = image.float()
    return torch.stack([normalize_channel(image[c], s, st) for c, (s, st) in enumerate(zip(schemes, stats,
                                                                                           strict=True))])
