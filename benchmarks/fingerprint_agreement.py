"""Does ``mipcandy.data.inspect`` agree with nnU-Net v2's dataset fingerprint?

Generates a synthetic nnU-Net raw dataset (``mipcandy.data.synthetic``, with zeroed margins so that cropping to
the nonzero box matters, and per-case shapes and anisotropic spacings), runs nnU-Net's
``DatasetFingerprintExtractor`` and :func:`mipcandy.data.inspection.inspect` on it, prints both and exits 1 when
they disagree beyond the tolerances below (2 when nnunetv2 is not importable: install the ``bench`` extra).

Tolerances. ``spacings`` and ``shapes_after_crop`` must be equal. nnU-Net's intensity statistics come from
``k = total / n_cases`` foreground voxels drawn per case with replacement; ours are exact at these sizes (every
case has fewer foreground voxels than its budget, so each voxel counts with weight 1 / n_case, the expectation of
nnU-Net's draw). So nnU-Net's numbers are estimates from ``N = k * n_cases`` draws, checked at 5 standard errors:
mean within ``5 * std / sqrt(N)``; std within ``5 * (max - min) / (2 * sqrt(N))`` (the standard error of a
sample std is at most ``range / (2 sqrt(N))``); each percentile ``p`` between our exact percentiles at
``p -/+ (5 * sqrt(p (1 - p) / N) + 1 / N)`` (a distribution-free band); min and max equal ours when every case's
foreground was drawn at least 20 times over on average (a voxel is then missed with probability < e^-20),
otherwise inside [our min, our 0.5 percentile] and [our 99.5 percentile, our max].

Run: ``PYTHONPATH=core python benchmarks/fingerprint_agreement.py [--cases 6] [--samples 1e8]``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATASET_NAME = "Dataset990_CandyFingerprint"
NNUNET_TOTAL_SAMPLES = int(10e7)
_STAT_PERCENTILES = {"percentile_00_5": 0.5, "median": 50.0, "percentile_99_5": 99.5}


def make_dataset(raw_root: Path, *, num_cases: int, seed: int) -> Path:
    """Synthetic 2-channel 3D cases with zero margins, varied shapes and anisotropic spacings."""
    from mipcandy.data.export import write_case, write_dataset_json
    from mipcandy.data.geometry import Geometry
    from mipcandy.data.synthetic import synthetic_case

    folder = raw_root / DATASET_NAME
    rng = np.random.default_rng(seed)
    for index in range(num_cases):
        shape = tuple(int(n) for n in rng.integers([14, 28, 28], [22, 44, 44]))
        spacing = (float(rng.choice([2.5, 3.0, 5.0])), float(rng.uniform(0.7, 0.9)), float(rng.uniform(0.7, 0.9)))
        image, label = synthetic_case(index, shape=shape, spacing=spacing, num_classes=3, num_channels=2,
                                      modality="MRI", seed=seed)
        keep = np.zeros(shape, dtype=bool)
        lows = [int(rng.integers(0, n // 5 + 1)) for n in shape]
        highs = [n - int(rng.integers(0, n // 5 + 1)) for n in shape]
        keep[tuple(slice(a, b) for a, b in zip(lows, highs, strict=True))] = True
        image[:, ~keep] = 0.0
        write_case(folder, f"case_{index:03d}", image, label, Geometry.identity(3, spacing))
    write_dataset_json(folder, name="CandyFingerprint", channel_names={0: "T1", 1: "T2"},
                       labels={"background": 0, "a": 1, "b": 2}, num_training=num_cases, file_ending=".nii.gz")
    return folder


def nnunet_fingerprint(raw_root: Path, preprocessed_root: Path, *, total_samples: int,
                       num_processes: int = 2) -> dict[str, Any]:
    """nnU-Net's fingerprint of ``raw_root/DATASET_NAME`` (raises ImportError without a working nnunetv2)."""
    os.environ["nnUNet_raw"] = str(raw_root)
    os.environ["nnUNet_preprocessed"] = str(preprocessed_root)
    os.environ.setdefault("nnUNet_results", str(preprocessed_root.parent / "nnUNet_results"))
    try:
        from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
            DatasetFingerprintExtractor,
        )
    except Exception as err:  # a broken torchvision raises RuntimeError, not ImportError
        raise ImportError(f"nnunetv2's fingerprint extractor is not importable ({type(err).__name__}: {err}); "
                          "install the bench extra") from err
    extractor = DatasetFingerprintExtractor(DATASET_NAME, num_processes=num_processes)
    extractor.show_progress_bar = False
    extractor.num_foreground_voxels_for_intensitystats = total_samples
    return extractor.run(overwrite_existing=True)


def our_fingerprint(folder: Path, *, total_samples: int) -> tuple[Any, Any]:
    """Our inspection of ``folder`` and the pooled intensity samples behind it (for tolerance bands)."""
    from mipcandy.data.inspection import inspect, inspect_case
    from mipcandy.data.intensity_stats import IntensityPool
    from mipcandy.data.nnunet import NNUNetDataset

    dataset = NNUNetDataset(folder)
    annotations = inspect(dataset, intensity_samples=total_samples, max_samples_per_class=0, progress=False)
    pool = IntensityPool(len(annotations.channel_names))
    budget = max(1, total_samples // len(dataset))
    for i in range(len(dataset)):
        image, label = dataset[i]
        _, samples = inspect_case(dataset.case_id(i), image, label, dataset.geometry(i).spacing,
                                  max_samples_per_class=0, intensity_budget=budget)
        pool.add(samples, 1.0 / max(samples.shape[1], 1))
    return annotations, pool


@dataclass(frozen=True)
class Check:
    """One compared quantity."""

    name: str
    ours: Any
    theirs: Any
    ok: bool
    tolerance: str


def compare(annotations: Any, pool: Any, theirs: dict[str, Any], *, total_samples: int) -> list[Check]:
    """Every check described in the module docstring."""
    checks = []
    for record, spacing, shape in zip(annotations.cases, theirs["spacings"], theirs["shapes_after_crop"],
                                      strict=True):
        theirs_spacing = tuple(float(s) for s in spacing)
        checks.append(Check(f"{record.case_id} spacing", record.spacing, theirs_spacing,
                            record.spacing == theirs_spacing, "exact"))
        theirs_shape = tuple(int(n) for n in shape)
        checks.append(Check(f"{record.case_id} shape_after_crop", record.shape_after_crop, theirs_shape,
                            record.shape_after_crop == theirs_shape, "exact"))
    n_cases = len(annotations)
    per_case = total_samples // n_cases
    draws = per_case * n_cases
    most_foreground = max(sum(n for c, n in r.class_counts.items() if c > 0) for r in annotations.cases)
    exhaustive = per_case >= 20 * most_foreground
    properties = theirs["foreground_intensity_properties_per_channel"]
    for channel, ours in enumerate(annotations.intensity):
        other = properties.get(channel, properties.get(str(channel)))
        prefix = f"channel {channel}"
        se = 5 / math.sqrt(draws)
        checks.append(Check(f"{prefix} mean", ours.mean, other["mean"],
                            abs(ours.mean - other["mean"]) <= se * ours.std, f"5 std/sqrt(N) = {se * ours.std:.3g}"))
        std_tol = se * (ours.max - ours.min) / 2
        checks.append(Check(f"{prefix} std", ours.std, other["std"], abs(ours.std - other["std"]) <= std_tol,
                            f"5 range/(2 sqrt(N)) = {std_tol:.3g}"))
        for key, p in _STAT_PERCENTILES.items():
            delta = 100 * (5 * math.sqrt(p / 100 * (1 - p / 100) / draws) + 1 / draws)
            low, high = pool.percentiles(channel, (max(p - delta, 0.0), min(p + delta, 100.0)))
            checks.append(Check(f"{prefix} {key}", getattr(ours, key), other[key], low <= other[key] <= high,
                                f"within our p{max(p - delta, 0):.3f}..p{min(p + delta, 100):.3f} = "
                                f"[{low:.6g}, {high:.6g}]"))
        for key, band in (("min", (ours.min, ours.percentile_00_5)), ("max", (ours.percentile_99_5, ours.max))):
            value = getattr(ours, key)
            if exhaustive:
                checks.append(Check(f"{prefix} {key}", value, other[key], math.isclose(value, other[key],
                                                                                       rel_tol=1e-7), "exact"))
            else:
                checks.append(Check(f"{prefix} {key}", value, other[key], band[0] <= other[key] <= band[1],
                                    f"in [{band[0]:.6g}, {band[1]:.6g}]"))
    return checks


def print_checks(checks: list[Check]) -> None:
    """A rich table of every check."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mipcandy inspect() vs nnU-Net v2 DatasetFingerprintExtractor", title_justify="left")
    for column in ("quantity", "mipcandy", "nnU-Net", "difference", "tolerance", "ok"):
        table.add_column(column, overflow="fold")
    for check in checks:
        numeric = isinstance(check.ours, float) and isinstance(check.theirs, float)
        diff = f"{check.ours - check.theirs:+.3g}" if numeric else ("" if check.ok else "differs")
        verdict = "[green]yes[/]" if check.ok else "[red]NO[/]"
        table.add_row(check.name, _show(check.ours), _show(check.theirs), diff, check.tolerance, verdict)
    Console(width=max(Console().width, 150)).print(table)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return str(value)


def run(*, num_cases: int, total_samples: int, seed: int, workdir: Path, num_processes: int = 2) -> list[Check]:
    """Generate, fingerprint both ways, compare."""
    raw = workdir / "nnUNet_raw"
    folder = make_dataset(raw, num_cases=num_cases, seed=seed)
    theirs = nnunet_fingerprint(raw, workdir / "nnUNet_preprocessed", total_samples=total_samples,
                                num_processes=num_processes)
    annotations, pool = our_fingerprint(folder, total_samples=total_samples)
    return compare(annotations, pool, theirs, total_samples=total_samples)


def main(argv: list[str] | None = None) -> int:
    """Command line entry; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="number of synthetic cases")
    parser.add_argument("--samples", type=float, default=NNUNET_TOTAL_SAMPLES,
                        help="foreground intensity samples for the whole dataset (nnU-Net: 10e7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2, help="nnU-Net fingerprint worker processes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="candy_fingerprint_") as tmp:
        try:
            checks = run(num_cases=args.cases, total_samples=int(args.samples), seed=args.seed, workdir=Path(tmp),
                         num_processes=args.processes)
        except ImportError as err:
            print(err, file=sys.stderr)
            return 2
    print_checks(checks)
    failed = [c.name for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks agree" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
