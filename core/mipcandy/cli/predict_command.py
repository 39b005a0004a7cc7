"""``candy predict --experiment EXP INPUT OUTPUT_DIR``: segment images with a trained experiment.

INPUT is an image file or a folder of images in nnU-Net naming (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``... are
the channels of ``CASE``); each prediction is written as ``OUTPUT_DIR/CASE<ending>`` with the input's geometry.
torch is imported inside :func:`run` only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mipcandy.cli.arguments import positive_int

if TYPE_CHECKING:
    from mipcandy.data.preprocessing_plan import PreprocessingPlan


def _overlap(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"overlap must lie in [0, 1), got {text!r}")
    return value



def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--experiment", required=True, metavar="EXP_DIR",
                        help="experiment folder of a training run (holds config.json and checkpoints)")
    parser.add_argument("input", metavar="INPUT", help="image file or folder (CASE_0000.nii.gz, one file per channel)")
    parser.add_argument("output", metavar="OUTPUT_DIR", help="folder for the predictions (CASE.nii.gz, ...)")
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="which checkpoint to use (default: best)")
    parser.add_argument("--tta", action="store_true", help="average over mirroring along every axis (2^n passes)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write the class probabilities (CASE.npz, key 'probabilities')")
    parser.add_argument("--keep-largest-component", action="store_true",
                        help="keep only the largest connected component of each foreground class")
    parser.add_argument("--plan", metavar="DIR", help="preprocessed dataset folder (or its manifest.json) whose plan "
                                                      "to apply, when config.json records none")
    parser.add_argument("--overlap", type=_overlap, default=0.5, help="sliding-window overlap (default: 0.5)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="windows per forward pass "
                                                                           "(default: as in training)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: auto)")


def _plan(path: str | None) -> PreprocessingPlan | None:
    """The plan stored in a preprocessed dataset's ``manifest.json``."""
    if path is None:
        return None
    import json

    from mipcandy.data.preprocess import MANIFEST
    from mipcandy.data.preprocessing_plan import PreprocessingPlan

    manifest = Path(path)
    manifest = manifest / MANIFEST if manifest.is_dir() else manifest
    if not manifest.is_file():
        raise FileNotFoundError(f"--plan {path}: no {MANIFEST} there; pass the preprocessed dataset folder that "
                                "candy train created (OUTPUT/preprocessed/<dataset>)")
    try:
        return PreprocessingPlan.from_dict(json.loads(manifest.read_text(encoding="utf-8"))["plan"])
    except (ValueError, KeyError) as error:
        raise ValueError(f"--plan {manifest}: not a preprocessing manifest ({error})") from None


def run(args: argparse.Namespace) -> int:
    """Predict; 0 on success, 2 when the experiment or the input cannot be used."""
    from rich.console import Console

    from mipcandy.inference.predictor import Predictor
    from mipcandy.plugins import BundleError

    console = Console(stderr=True)
    try:
        predictor = Predictor(args.experiment, checkpoint=args.checkpoint, device=args.device, plan=_plan(args.plan),
                              overlap=args.overlap, batch_size=args.batch_size, tta=args.tta,
                              keep_largest=args.keep_largest_component)
        written = predictor.predict_to_files(args.input, args.output, save_probabilities=args.save_probabilities,
                                             console=console)
    except (BundleError, FileNotFoundError, ValueError, NotImplementedError, RuntimeError, OSError) as error:
        print(f"candy predict: {error}", file=sys.stderr)
        return 2
    print(f"{len(written)} prediction(s) written to {args.output}")
    return 0
