"""Time ``Evaluator.evaluate_folders`` on a folder of 3D cases: surface metrics shared or not, serial or in workers.

Writes ``--cases`` synthetic reference/prediction pairs (``--size``^3 label maps with 2 foreground classes,
anisotropic spacing, NIfTI) and scores them with Dice, HD95, ASSD and NSD in three ways:

- ``separate``: every surface metric computes its own boundaries and distances (hidden from the sharing by a
  wrapper), as before the shared computation;
- ``shared``: the Evaluator derives HD95, ASSD and NSD from one distance computation per (case, class);
- ``shared, N workers``: the same with ``--workers`` cases at once.

All results are checked to be identical (every value, in case order) before anything is timed; the table shows the
median of ``--repeats`` alternating runs and each one's time relative to ``separate``.

    python benchmarks/evaluate_folder.py [--cases 20] [--size 96] [--workers 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mipcandy.evaluation import Evaluator, Metric
from mipcandy.metrics import assd, dice_similarity_coefficient, hd95, nsd

SPACING = (2.0, 0.8, 0.8)  # tensor axis order (z, y, x)
TOLERANCE = 1.5


def write(path: Path, labels: np.ndarray) -> None:
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(tuple(reversed(SPACING)))
    sitk.WriteImage(image, str(path))


def make_case(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A reference with two overlapping ellipsoids and a prediction with shifted, resized ones and speckle."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")).astype(np.float32)
    reference, prediction = np.zeros((size,) * 3, np.uint8), np.zeros((size,) * 3, np.uint8)
    for class_id in (1, 2):
        centre = rng.uniform(0.3, 0.7, 3) * size
        radius = rng.uniform(0.12, 0.25, 3) * size
        for target, shift, scale in ((reference, 0.0, 1.0), (prediction, rng.normal(0, 2, 3), rng.uniform(0.9, 1.1))):
            offsets = (grid - (centre + shift).reshape(3, 1, 1, 1)) / (radius * scale).reshape(3, 1, 1, 1)
            target[(offsets ** 2).sum(0) <= 1] = class_id
    speckle = rng.random(prediction.shape) < 0.001
    prediction[speckle] = rng.integers(0, 3, int(speckle.sum()))
    return reference, prediction


def unshared(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` behind a wrapper the Evaluator does not recognise, so it computes its own distances."""

    def call(prediction: Any, reference: Any, *, spacing: Any = None, spatial_dims: Any = None) -> Any:
        return fn(prediction, reference, spacing=spacing, spatial_dims=spatial_dims)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nsd_at = partial(nsd, tolerance=TOLERANCE)
    surface = {"hd95": hd95, "assd": assd, "nsd": nsd_at}
    shared = [Metric("dice", dice_similarity_coefficient), *(Metric(n, f, n == "nsd") for n, f in surface.items())]
    separate = [shared[0], *(Metric(n, unshared(f), n == "nsd") for n, f in surface.items())]
    evaluators = {
        "separate": Evaluator(*separate, progress=False),
        "shared": Evaluator(*shared, progress=False),
        f"shared, {args.workers} workers": Evaluator(*shared, progress=False, workers=args.workers),
    }
    with tempfile.TemporaryDirectory(prefix="mipcandy-evaluate-") as root:
        predictions, references = Path(root, "pred"), Path(root, "ref")
        predictions.mkdir()
        references.mkdir()
        rng = np.random.default_rng(args.seed)
        for i in range(args.cases):
            reference, prediction = make_case(args.size, rng)
            write(references / f"case_{i:03d}.nii.gz", reference)
            write(predictions / f"case_{i:03d}.nii.gz", prediction)
        results = {name: e.evaluate_folders(predictions, references) for name, e in evaluators.items()}  # warm-up
        first = results["separate"]
        for name, result in results.items():
            if result.case_ids != first.case_ids or not all(
                    np.array_equal(result.table(m), first.table(m), equal_nan=True) for m in first.metrics):
                raise SystemExit(f"{name} disagrees with the separate computation")
        print(f"{args.cases} cases of {args.size}^3, spacing {SPACING} mm, 2 classes, Dice + HD95 + ASSD + "
              f"NSD@{TOLERANCE} mm: identical results in all modes")
        times: dict[str, list[float]] = {name: [] for name in evaluators}
        for _ in range(args.repeats):
            for name, evaluator in evaluators.items():
                start = time.perf_counter()
                evaluator.evaluate_folders(predictions, references)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["separate"])
    print(f"{'mode':22} {'median s':>9} {'min s':>7} {'vs separate':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:22} {median:9.2f} {min(values):7.2f} {median / base:12.2f}")


if __name__ == "__main__":
    main()
