"""Per-case time of our metrics against MONAI on 3D masks (default 256^3): Dice, HD95, ASSD, NSD, and all three
surface metrics of one class together.

Both libraries get the same float32 (1, 1, D, H, W) masks of two offset ellipsoids with anisotropic spacing. The
last row, ``surface``, is our :func:`surface_metrics` (one distance computation) against MONAI's three calls
``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance(symmetric=True)`` and
``compute_surface_dice``; the goal is at most 0.4 of MONAI's time. Every value is checked against MONAI's (within
1e-4) before anything is timed. Calls alternate, and after the warm-up call each the median and the minimum of
``--repeats`` timed calls are reported (on a shared machine the minimum is the steadier estimate). Ratios are
ours / MONAI (below 1: we are faster). Needs monai (``pip install .[bench]``).

    python benchmarks/metrics.py [--size 256] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from mipcandy.metrics import assd, dice_similarity_coefficient, hd95, nsd, surface_metrics

SPACING = (1.5, 0.8, 0.8)
TOLERANCE = 1.0
AGREEMENT = 1e-4
GOAL = 0.4  # all three surface metrics: at most this share of MONAI's three calls


def ellipsoid(size: int, center: tuple[float, ...], radius: tuple[float, ...]) -> torch.Tensor:
    """Float32 (1, 1, size, size, size) mask of an axis-aligned ellipsoid given in fractions of ``size``."""
    grid = torch.arange(size, dtype=torch.float32)
    axes = [((grid - c * size) / (r * size)) ** 2 for c, r in zip(center, radius, strict=True)]
    inside = axes[0].view(-1, 1, 1) + axes[1].view(1, -1, 1) + axes[2].view(1, 1, -1) <= 1
    return inside.float()[None, None]


def timed(call: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    """Seconds taken by one call and its values, flattened."""
    start = time.perf_counter()
    value = call().flatten()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from monai.metrics import (
            compute_average_surface_distance,
            compute_dice,
            compute_hausdorff_distance,
            compute_surface_dice,
        )
    except ImportError as error:
        raise SystemExit(f"this benchmark compares against MONAI, which is not installed ({error})") from error
    warnings.simplefilter("ignore")

    outputs = ellipsoid(args.size, (0.50, 0.50, 0.50), (0.23, 0.31, 0.35))
    labels = ellipsoid(args.size, (0.52, 0.485, 0.51), (0.22, 0.32, 0.34))

    def monai_hd95() -> torch.Tensor:
        return compute_hausdorff_distance(outputs, labels, include_background=True, percentile=95, spacing=SPACING)

    def monai_assd() -> torch.Tensor:
        return compute_average_surface_distance(outputs, labels, include_background=True, symmetric=True,
                                                spacing=SPACING)

    def monai_nsd() -> torch.Tensor:
        return compute_surface_dice(outputs, labels, [TOLERANCE], include_background=True, spacing=SPACING)

    def ours_surface() -> torch.Tensor:
        values = surface_metrics(outputs, labels, tolerance=TOLERANCE, spacing=SPACING, reduction="none")
        return torch.stack([values["hd95"], values["assd"], values["nsd"]])

    pairs = {
        "Dice": (lambda: dice_similarity_coefficient(outputs, labels, reduction="none"),
                 lambda: compute_dice(outputs, labels, include_background=True)),
        "HD95": (lambda: hd95(outputs, labels, spacing=SPACING, reduction="none"), monai_hd95),
        "ASSD": (lambda: assd(outputs, labels, spacing=SPACING, reduction="none"), monai_assd),
        "NSD": (lambda: nsd(outputs, labels, tolerance=TOLERANCE, spacing=SPACING, reduction="none"), monai_nsd),
        "surface": (ours_surface, lambda: torch.stack([monai_hd95(), monai_assd(), monai_nsd()])),
    }
    print(f"{args.size}^3 masks, spacing {SPACING} mm, NSD tolerance {TOLERANCE} mm, {args.threads} threads, "
          f"{args.repeats} repeats")
    for name, (ours, theirs) in pairs.items():  # agreement first (the calls double as warm-up)
        mine, reference = ours().flatten().double(), theirs().flatten().double()
        if mine.shape != reference.shape or not torch.allclose(mine, reference, atol=AGREEMENT, rtol=0):
            raise SystemExit(f"{name}: ours {mine.tolist()} and MONAI's {reference.tolist()} differ by more than "
                             f"{AGREEMENT}; not timing a wrong result")
    print(f"all values agree with MONAI within {AGREEMENT}")
    print(f"{'metric':7} {'ours s':>8} {'MONAI s':>8} {'ratio':>6} {'ours min':>9} {'MONAI min':>9} {'ratio':>6}  "
          "values")
    ratios = {}
    for name, (ours, theirs) in pairs.items():
        ours_times, theirs_times, ours_value = [], [], torch.empty(0)
        for _ in range(args.repeats):  # alternate so that machine load hits both alike
            seconds, ours_value = timed(ours)
            ours_times.append(seconds)
            seconds, _ = timed(theirs)
            theirs_times.append(seconds)
        mine, reference = statistics.median(ours_times), statistics.median(theirs_times)
        fastest, their_fastest = min(ours_times), min(theirs_times)
        ratios[name] = mine / reference
        print(f"{name:7} {mine:8.3f} {reference:8.3f} {mine / reference:6.2f} {fastest:9.3f} {their_fastest:9.3f} "
              f"{fastest / their_fastest:6.2f}  {', '.join(f'{v:.6f}' for v in ours_value.tolist())}")
    verdict = "met" if ratios["surface"] <= GOAL else "NOT met"
    print(f"All three surface metrics: {ratios['surface']:.2f} of MONAI's three calls (goal <= {GOAL}: {verdict})")


if __name__ == "__main__":
    main()
