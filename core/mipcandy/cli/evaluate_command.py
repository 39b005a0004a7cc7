"""``candy evaluate PRED_DIR LABEL_DIR``: score predicted label files against references, paired by case name.

Prints a table over cases (the worst case highlighted) and a per-class mean table; ``--json`` writes a
summary in the spirit of nnU-Net's ``summary.json`` and ``--csv`` one row per (case, class) plus summary rows.
Surface metrics use each reference file's spacing. Means leave out undefined values and count them
(:mod:`mipcandy.evaluation.undefined`). Classes are named by ``--labels``, or else by the ``dataset.json`` found
in LABEL_DIR or its parent folder (nnU-Net's layout). ``--workers`` scores several cases at once, in threads.
Exit status: 0 on success, 2 on bad input (message on stderr). torch is imported inside :func:`run` only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mipcandy.cli.arguments import count, positive_int
from mipcandy.cli.errors import reports_failures
from mipcandy.console import make_console
from mipcandy.evaluation.undefined import POLICY

NAMES = ("dice", "iou", "hd95", "assd", "nsd")
DEFAULT_METRICS = ("dice", "iou", "hd95", "assd")


def _metric_names(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown or text!r}; choose from {','.join(NAMES)}")
    return names


def _millimetres(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite tolerance >= 0 in mm, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("predictions", metavar="PRED_DIR", help="folder of predicted label maps (CASE.nii.gz, ...)")
    parser.add_argument("references", metavar="LABEL_DIR", help="folder of reference label maps, same case names")
    parser.add_argument("--metrics", type=_metric_names, default=None, metavar="LIST",
                        help=f"comma-separated, from {','.join(NAMES)} (default: {','.join(DEFAULT_METRICS)}, "
                             "plus nsd when --nsd-tolerance is given)")
    parser.add_argument("--nsd-tolerance", type=_millimetres, default=None, metavar="MM",
                        help="tolerance of the normalised surface distance, in mm (needed for nsd)")
    parser.add_argument("--labels", metavar="DATASET_JSON",
                        help="dataset.json (or its folder) whose 'labels' name and fix the classes to score "
                             "(default: the classes found in the files, named by the dataset.json in LABEL_DIR "
                             "or its parent folder, if there is one)")
    parser.add_argument("--include-background", action="store_true", help="score class 0 as well")
    parser.add_argument("--json", metavar="FILE", help="write the summary (per case, per class, means) as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write one row per (case, class) as CSV, then summary rows")
    parser.add_argument("--worst", type=count, default=5, metavar="N",
                        help="worst cases listed in the JSON (default: 5)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="cases scored at once, in threads (default: 1; at most the CPUs available)")
    parser.epilog = f"Undefined values: {POLICY}"


def _read_labels(path: Path) -> dict[str, int]:
    """The ``labels`` of a dataset.json file (or of the one in a folder), checked as datasets check them.

    nnU-Net v1's layout (``{"0": "background", "1": "liver"}``, as the Medical Segmentation Decathlon ships it)
    is accepted too.
    """
    from mipcandy.data.nnunet import parse_labels

    file = path / "dataset.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; pass a dataset.json file (or the folder holding one)")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err})") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
        raise ValueError(f"{file} has no 'labels' mapping of class names to ids")
    labels = raw["labels"]
    if labels and all(isinstance(k, str) and k.isdigit() and isinstance(v, str) for k, v in labels.items()):
        labels = {name: int(k) for k, name in labels.items()}
    parsed, problems = parse_labels(labels)
    if problems:
        raise ValueError(f"{file}: {'; '.join(problems)}")
    return parsed


def find_dataset_json(labels_dir: Path) -> Path | None:
    """The ``dataset.json`` of the dataset a labels folder belongs to: in the folder, or beside it (its parent)."""
    for folder in (labels_dir, labels_dir.parent):
        if (folder / "dataset.json").is_file():
            return folder / "dataset.json"
    return None


def _dataset_class_names(labels_dir: Path, console: Any) -> dict[int, str]:
    """Class names from the labels folder's dataset.json; {} (with a note) when there is none or it is unusable."""
    found = find_dataset_json(labels_dir)
    if found is None:
        return {}
    try:
        labels = _read_labels(found)
    except (OSError, ValueError) as err:
        print(f"candy evaluate: not naming classes from {found}: {err}", file=sys.stderr)
        return {}
    console.print(f"Class names from {found} (--labels chooses another file)", highlight=False)
    return {i: name for name, i in labels.items()}


@reports_failures("candy evaluate")
def run(args: argparse.Namespace) -> int:
    """Evaluate; 0 on success, 2 when the folders, labels or options are not usable."""
    from mipcandy.evaluation.evaluator import Evaluator, standard_metrics

    names = args.metrics or [*DEFAULT_METRICS, *(["nsd"] if args.nsd_tolerance is not None else [])]
    console = make_console()
    classes = _read_labels(Path(args.labels)) if args.labels else None
    evaluator = Evaluator(*standard_metrics(names, nsd_tolerance=args.nsd_tolerance), classes=classes,
                          include_background=args.include_background, console=console, workers=args.workers)
    result = evaluator.evaluate_folders(args.predictions, args.references)
    if classes is None:
        result = result.with_class_names(_dataset_class_names(Path(args.references), console))
    console.print(result.case_table())
    console.print(result.class_table())
    if args.json:
        result.save_json(args.json, worst_n=args.worst)
        console.print(f"Summary written to {args.json}", highlight=False)
    if args.csv:
        result.save_csv(args.csv)
        console.print(f"Per-case values written to {args.csv}", highlight=False)
    return 0
