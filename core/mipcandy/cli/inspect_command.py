"""``candy inspect DATASET_DIR``: fingerprint an nnU-Net raw dataset, print a summary, save the annotations.

The annotations (per-case boxes, class counts and foreground locations, per-channel foreground intensity
statistics) go to ``DATASET_DIR/inspection.json`` unless ``--json FILE`` says otherwise; training loads them
with ``load_inspection_annotations``. torch is imported inside :func:`run` only.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mipcandy.cli.arguments import count
from mipcandy.cli.errors import reports_failures
from mipcandy.console import make_console

DEFAULT_NAME = "inspection.json"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("dataset", metavar="DATASET_DIR", help="nnU-Net raw dataset folder (dataset.json, imagesTr/, "
                                                               "labelsTr/)")
    parser.add_argument("--json", metavar="FILE", help=f"where to write the annotations (default: "
                                                       f"DATASET_DIR/{DEFAULT_NAME})")
    parser.add_argument("--max-samples-per-class", type=count, default=10_000, metavar="N",
                        help="foreground locations kept per class and case (default: 10000)")
    parser.add_argument("--intensity-samples", type=count, default=100_000_000, metavar="N",
                        help="foreground intensities sampled over the whole dataset (default: 1e8, as nnU-Net)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")


@reports_failures("candy inspect")
def run(args: argparse.Namespace) -> int:
    """Inspect the dataset; 0 on success, 2 when the folder is not a readable dataset."""
    from mipcandy.data.inspection import inspect
    from mipcandy.data.nnunet import NNUNetDataset

    console = make_console()
    folder = Path(args.dataset)
    dataset = NNUNetDataset(folder)
    annotations = inspect(dataset, max_samples_per_class=args.max_samples_per_class,
                          intensity_samples=max(args.intensity_samples, 1), seed=args.seed, console=console)
    target = Path(args.json) if args.json else folder / DEFAULT_NAME
    annotations.save(target)
    _print_summary(console, folder, annotations)
    console.print(f"Annotations written to {target}", highlight=False)
    return 0


def _fmt(values: Any) -> str:
    return " x ".join(f"{v:.4g}" for v in values)


def _print_summary(console: Any, folder: Path, annotations: Any) -> None:
    import numpy as np
    from rich.table import Table

    summary = Table(title=f"Dataset {folder.name}: {len(annotations)} cases, {annotations.ndim}D",
                    title_justify="left", show_header=False)
    summary.add_column("property")
    summary.add_column("value", overflow="fold")
    spacings = np.asarray([c.spacing for c in annotations.cases])
    target = annotations.target_spacing()
    summary.add_row("spacing range (mm)", f"{_fmt(spacings.min(axis=0))} .. {_fmt(spacings.max(axis=0))}")
    summary.add_row("target spacing (mm)", _fmt(target))
    summary.add_row("median shape at target spacing", _fmt(annotations.median_shape(target_spacing=target)))
    if any(c.foreground_bbox is not None for c in annotations.cases):
        summary.add_row("foreground box, 95th percentile (voxels)", _fmt(annotations.foreground_shape()))
    summary.add_row("planned patch shape", _fmt(annotations.patch_shape()))
    names = {v: k for k, v in (annotations.labels or {}).items()}
    class_ids = sorted({c for case in annotations.cases for c in case.class_counts if c > 0})
    for c in class_ids:
        present = sum(1 for case in annotations.cases if case.class_counts.get(c, 0) > 0)
        summary.add_row(f"class {c} ({names.get(c, '?')})", f"present in {present}/{len(annotations)} cases")
    console.print(summary)

    channels = Table(title="Foreground intensities", title_justify="left")
    channels.add_column("")
    schemes = annotations.normalization_schemes()
    for c, name in enumerate(annotations.channel_names):
        channels.add_column(f"{c}: {name}", justify="right")
    channels.add_row("normalization", *schemes)
    for key in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5"):
        channels.add_row(key, *("-" if s is None else f"{getattr(s, key):.6g}" for s in annotations.intensity))
    console.print(channels)
