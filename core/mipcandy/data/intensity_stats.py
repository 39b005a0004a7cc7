"""Foreground intensity statistics pooled over a dataset with bounded memory, following nnU-Net's fingerprint.

nnU-Net draws ``10e7 / n_cases`` foreground voxels per case (with replacement) and computes mean, median, std,
min, max and the 0.5 / 99.5 percentiles over the pooled draws, so every case weighs the same whatever its
foreground size. :class:`IntensityPool` keeps the same weighting without the redundant draws: a case with at
most ``budget`` foreground voxels contributes all of them, each weighted ``1 / n`` (the expected multiplicity
of nnU-Net's draw, scaled), and a larger case contributes ``budget`` draws with replacement weighted
``1 / budget``. Statistics are then exact when no case is sampled, and nnU-Net's estimate otherwise.
Percentiles use the inverted-CDF rule (the smallest value whose pooled weight fraction reaches ``q``),
numpy's only weighted percentile method.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

PERCENTILES = (0.5, 50.0, 99.5)


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity statistics of one channel; keys match nnU-Net's ``dataset_fingerprint.json``."""

    mean: float
    median: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float

    def to_dict(self) -> dict[str, float]:
        """JSON-safe form with nnU-Net's key names."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> IntensityStats:
        """Inverse of :meth:`to_dict` (also reads nnU-Net's ``foreground_intensity_properties_per_channel``)."""
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"Intensity statistics lack {missing}; expected the keys {names}")
        return cls(**{name: float(data[name]) for name in names})


def weighted_percentiles(groups: list[np.ndarray], weights: list[float], percentiles: tuple[float, ...]) -> list[float]:
    """Inverted-CDF percentiles of the union of sorted ``groups``, each value of group ``g`` weighing ``weights[g]``.

    A bisection over the globally sorted values, with the pooled CDF evaluated per group by binary search, so
    no per-value weight array (or argsort index) is ever built. A CDF within 1e-12 (relative) of the target
    counts as reaching it: exact ties resolve to the lower value, as in exact arithmetic, not by rounding luck.
    """
    pooled = np.sort(np.concatenate(groups))
    total = math.fsum(w * len(g) for g, w in zip(groups, weights, strict=True))

    def cdf(value: float) -> float:
        return math.fsum(w * int(np.searchsorted(g, value, side="right")) for g, w in zip(groups, weights, strict=True))

    out = []
    for q in percentiles:
        target, lo, hi = (q / 100.0 - 1e-12) * total, 0, len(pooled) - 1
        while lo < hi:  # smallest index whose value has pooled CDF >= target
            mid = (lo + hi) // 2
            if cdf(float(pooled[mid])) >= target:
                hi = mid
            else:
                lo = mid + 1
        out.append(float(pooled[lo]))
    return out


class IntensityPool:
    """Accumulates per-case foreground samples of every channel and pools them into :class:`IntensityStats`."""

    def __init__(self, num_channels: int) -> None:
        self._groups: list[list[np.ndarray]] = [[] for _ in range(num_channels)]
        self._weights: list[float] = []

    @property
    def num_channels(self) -> int:
        """Number of channels."""
        return len(self._groups)

    def add(self, values: np.ndarray, weight: float) -> None:
        """Add one case's samples, ``values`` of shape (C, n), each sample weighing ``weight``."""
        if values.ndim != 2 or values.shape[0] != self.num_channels:
            raise ValueError(f"Expected samples of shape ({self.num_channels}, n), got {values.shape}")
        if values.shape[1] == 0:
            return
        for group, channel in zip(self._groups, values, strict=True):
            group.append(np.sort(channel))
        self._weights.append(float(weight))

    def percentiles(self, channel: int, percentiles: tuple[float, ...]) -> list[float]:
        """Pooled (case-weighted, inverted-CDF) percentiles of one channel."""
        if not self._weights:
            raise ValueError("No foreground samples were added, so there are no percentiles")
        return weighted_percentiles(self._groups[channel], self._weights, percentiles)

    def stats(self) -> list[IntensityStats | None]:
        """Pooled statistics per channel; None for every channel when no case had foreground."""
        if not self._weights:
            return [None] * self.num_channels
        return [self._channel_stats(groups) for groups in self._groups]

    def _channel_stats(self, groups: list[np.ndarray]) -> IntensityStats:
        weights = self._weights
        total = sum(w * len(g) for g, w in zip(groups, weights, strict=True))
        mean = sum(w * float(g.sum(dtype=np.float64)) for g, w in zip(groups, weights, strict=True)) / total
        var = sum(
            w * float(np.square(g.astype(np.float64) - mean).sum()) for g, w in zip(groups, weights, strict=True)
        ) / total
        low, median, high = weighted_percentiles(groups, weights, PERCENTILES)
        return IntensityStats(
            mean=mean,
            median=median,
            std=math.sqrt(max(var, 0.0)),
            min=float(min(g[0] for g in groups)),
            max=float(max(g[-1] for g in groups)),
            percentile_00_5=low,
            percentile_99_5=high,
        )
