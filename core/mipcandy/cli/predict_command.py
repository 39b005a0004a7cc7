"""``candy predict --experiment EXP INPUT OUTPUT_DIR``: segment images with a trained experiment.

INPUT is an image file or a folder of images in nnU-Net naming (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``... are
the channels of ``CASE``); each prediction is written as ``OUTPUT_DIR/CASE<ending>`` with the input's geometry.

User data is never replaced: OUTPUT_DIR must not be the folder the images are read from, and a folder that already
holds a file named like a prediction of one of the cases (``CASE.nii.gz``, ``CASE.png``, ``CASE.npz``... in any
image format, so that ground-truth labels are safe too) is refused unless ``--overwrite`` is given. Both checks
run before anything is written. A subfolder of the input folder is allowed: only the folder's own files are read.
Off a terminal (CI logs, ``| tee``) each case gets one line instead of a progress bar. torch is imported inside
:func:`run` only.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mipcandy.cli.arguments import positive_int
from mipcandy.cli.errors import reports_failures
from mipcandy.console import make_console

if TYPE_CHECKING:
    from mipcandy.data.preprocessing_plan import PreprocessingPlan
    from mipcandy.inference.predictor import PredictionCase

PROBABILITY_ENDINGS = (".npz", ".safetensors")


def _overlap(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"overlap must lie in [0, 1), got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--experiment", required=True, metavar="EXP_DIR",
                        help="experiment folder of a training run (holds its record and checkpoints)")
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
                                                      "to apply, when the experiment records none")
    parser.add_argument("--overlap", type=_overlap, default=0.5, help="sliding-window overlap (default: 0.5)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="windows per forward pass "
                                                                           "(default: as in training)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in OUTPUT_DIR named like a prediction of an input case (refused without "
                             "it, so that labels are never overwritten by mistake)")


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


def _input_folder(source: Path) -> Path:
    return source if source.is_dir() else source.parent


def refuse_input_folder(source: Path, output: Path) -> None:
    """Raise when OUTPUT_DIR is the folder the images are read from, or is not a folder at all."""
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"OUTPUT_DIR {output} is a file; give a folder for the predictions")
    folder = _input_folder(source)
    if output.is_dir() and folder.is_dir() and output.samefile(folder):
        raise ValueError(f"OUTPUT_DIR {output} is the folder the images are read from ({folder}); predictions would "
                         "mix with the images and could replace them: choose another folder")


def refuse_replacing(cases: list[PredictionCase], output: Path, endings: tuple[str, ...]) -> None:
    """Raise when ``output`` holds a file named like a prediction of one of ``cases``, in any of ``endings``."""
    if not output.is_dir():
        return
    existing = {p.name for p in output.iterdir()}
    clashes = sorted(name for case in cases for ending in endings if (name := case.case_id + ending) in existing)
    if clashes:
        shown = ", ".join(clashes[:5]) + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise FileExistsError(f"OUTPUT_DIR {output} already holds {len(clashes)} file(s) named like the predictions "
                              f"({shown}); they could be labels. Choose an empty folder, or pass --overwrite to "
                              "replace them")


def check_checkpoint(path: Path) -> None:
    """Read the checkpoint's header now, so that a truncated or corrupt file is named before any work."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except SafetensorError as error:
        raise ValueError(f"checkpoint {path} is not a readable safetensors file ({error}); it is truncated or "
                         "corrupt: use another one (--checkpoint latest) or train again") from None


@reports_failures("candy predict")
def run(args: argparse.Namespace) -> int:
    """Predict; 0 on success, 2 when the experiment, the input or the output folder cannot be used."""
    from rich.progress import track

    from mipcandy.data.io import SUPPORTED_SUFFIXES
    from mipcandy.inference.predictor import Predictor

    source, output = Path(args.input), Path(args.output)
    refuse_input_folder(source, output)
    predictor = Predictor(args.experiment, checkpoint=args.checkpoint, device=args.device, plan=_plan(args.plan),
                          overlap=args.overlap, batch_size=args.batch_size, tta=args.tta,
                          keep_largest=args.keep_largest_component)
    cases = predictor.cases(args.input)
    if not args.overwrite:
        refuse_replacing(cases, output, (*SUPPORTED_SUFFIXES, *PROBABILITY_ENDINGS))
    check_checkpoint(predictor.checkpoint_path)
    console = make_console()
    written: list[Path] = []
    for number, case in enumerate(track(cases, description="Predicting", console=console, transient=True,
                                        disable=not console.is_terminal), start=1):
        files = predictor.predict_to_files(list(case.files), output, save_probabilities=args.save_probabilities,
                                           progress=False)
        written += files
        if not console.is_terminal:
            console.print(f"[{number}/{len(cases)}] {case.case_id} -> {files[0]}", highlight=False, markup=False)
    console.print(f"{len(written)} prediction(s) written to {output}", highlight=False)
    return 0
