"""Per-case time of our metrics against MONAI on 3D masks (default 256^3): Dice, HD95, ASSD, NSD.

Both libraries get the same float32 (1, 1, D, H, W) masks of two offset ellipsoids with anisotropic spacing;
calls alternate, and after one warm-up call each the median and the minimum of ``--repeats`` timed calls are
reported (on a shared machine the minimum is the steadier estimate). Ratios are ours / MONAI (below 1: we
are faster). Needs monai (``pip install .[bench]``).

    python benchmarks/metrics.py [--size 256] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from mipcandy.metrics import assd, dice_similarity_coefficient, hd95, nsd

SPACING = (1.5, 0.8, 0.8)
TOLERANCE = 1.0


def ellipsoid(size: int, center: tuple[float, ...], radius: tuple[float, ...]) -> torch.Tensor:
    """Float32 (1, 1, size, size, size) mask of an axis-aligned ellipsoid given in fractions of ``size``."""
    grid = torch.arange(size, dtype=torch.float32)
    axes = [((grid - c * size) / (r * size)) ** 2 for c, r in zip(center, radius, strict=True)]
    inside = axes[0].view(-1, 1, 1) + axes[1].view(1, -1, 1) + axes[2].view(1, 1, -1) <= 1
    return inside.float()[None, None]


def timed(call: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """Seconds taken by one call and its (first) value."""
    start = time.perf_counter()
    value = float(call().flatten()[0])
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric
    except ImportError as error:
        raise SystemExit(f"this benchmark compares against MONAI, which is not installed ({error})") from error
    warnings.simplefilter("ignore")

    outputs = ellipsoid(args.size, (0.50, 0.50, 0.50), (0.23, 0.31, 0.35))
    labels = ellipsoid(args.size, (0.52, 0.485, 0.51), (0.22, 0.32, 0.34))
    pairs = {
        "Dice": (
            lambda: dice_similarity_coefficient(outputs, labels, reduction="none"),
            lambda: DiceMetric(include_background=True, reduction="none")(outputs, labels),
        ),
        "HD95": (
            lambda: hd95(outputs, labels, spacing=SPACING, reduction="none"),
            lambda: HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
                outputs, labels, spacing=SPACING),
        ),
        "ASSD": (
            lambda: assd(outputs, labels, spacing=SPACING, reduction="none"),
            lambda: SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")(
                outputs, labels, spacing=SPACING),
        ),
        "NSD": (
            lambda: nsd(outputs, labels, tolerance=TOLERANCE, spacing=SPACING, reduction="none"),
            lambda: SurfaceDiceMetric([TOLERANCE], include_background=True, reduction="none")(
                outputs, labels, spacing=SPACING),
        ),
    }
    print(f"{args.size}^3 masks, spacing {SPACING} mm, NSD tolerance {TOLERANCE} mm, {args.threads} threads, "
          f"{args.repeats} repeats")
    print(f"{'metric':6} {'ours s':>8} {'MONAI s':>8} {'ratio':>6} {'ours min':>9} {'MONAI min':>9} {'ratio':>6}  "
          f"{'ours value':>12} {'MONAI value':>12}")
    for name, (ours, theirs) in pairs.items():
        ours(), theirs()  # warm-up
        ours_times, theirs_times, ours_value, theirs_value = [], [], 0.0, 0.0
        for _ in range(args.repeats):  # alternate so that machine load hits both alike
            seconds, ours_value = timed(ours)
            ours_times.append(seconds)
            seconds, theirs_value = timed(theirs)
            theirs_times.append(seconds)
        mine, reference = statistics.median(ours_times), statistics.median(theirs_times)
        fastest, their_fastest = min(ours_times), min(theirs_times)
        print(f"{name:6} {mine:8.3f} {reference:8.3f} {mine / reference:6.2f} {fastest:9.3f} {their_fastest:9.3f} "
              f"{fastest / their_fastest:6.2f}  {ours_value:12.6f} {theirs_value:12.6f}")


if __name__ == "__main__":
    main()
