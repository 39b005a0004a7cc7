"""``candy train --bundle unet --dataset DIR``: preprocess an nnU-Net raw dataset and train a bundle on it.

The dataset is preprocessed once into ``OUTPUT/preprocessed/<dataset name>`` (nnU-Net's plan from ``inspect()``:
target spacing, normalization), the patch size comes from the inspection of the preprocessed cases, and each fold
trains in its own experiment folder under ``OUTPUT``, printed when done. ``--fold all`` trains every fold in
turn and prints a summary table; ``--resume FOLDER`` continues an interrupted run (same dataset and fold).
torch is imported inside :func:`run` only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mipcandy.cli.arguments import positive_int


def _fold(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold index or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a fold index is >= 0, got {value}")
    return value



def _bundle_option(text: str) -> tuple[str, Any]:
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a plain word, e.g. variant=3d


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--bundle", default="unet", help="the bundle building the network (default: unet)")
    parser.add_argument("--dataset", required=True, metavar="DIR", help="nnU-Net raw dataset folder")
    parser.add_argument("--fold", type=_fold, default=0, help="cross-validation fold 0..k-1, or 'all' to train "
                                                              "every fold in turn (default: 0)")
    parser.add_argument("--folds", type=positive_int, default=5, metavar="K", help="number of folds (default: 5)")
    parser.add_argument("--epochs", type=positive_int, default=1000, help="epochs (default: 1000, as nnU-Net)")
    parser.add_argument("--iterations", type=positive_int, default=250, help="iterations per epoch (default: 250)")
    parser.add_argument("--batch-size", type=positive_int, default=2, help="patches per batch (default: 2)")
    parser.add_argument("--deep-supervision", action="store_true", help="supervise every decoder output")
    parser.add_argument("--ema", action="store_true", help="validate and checkpoint an EMA of the weights")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and recorded)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: auto)")
    parser.add_argument("--workers", type=int, default=0, help="data loading worker processes (default: 0)")
    parser.add_argument("--bundle-option", action="append", default=[], type=_bundle_option, metavar="KEY=JSON",
                        help="an option for the bundle's build_network, e.g. hidden_chs=[16,32,64] (repeatable)")
    parser.add_argument("--no-augmentation", action="store_true", help="train without nnU-Net's default "
                                                                     "augmentation")
    parser.add_argument("--resume", metavar="FOLDER", help="continue the experiment in FOLDER")
    parser.add_argument("--output", default="experiments", metavar="DIR", help="where experiment folders go "
                                                                               "(default: ./experiments)")


def _trainer_class(bundle: str) -> Any:
    """The bundle's own trainer when it names one (its ``trainer_class`` hook), else the segmentation preset."""
    from mipcandy.plugins import get_plugin_manager

    trainer = get_plugin_manager().call(bundle, "trainer_class")
    if trainer is None:
        from mipcandy.presets.segmentation import SegmentationTrainer

        return SegmentationTrainer
    return trainer


def _resumed_fold(folder: Path) -> int:
    """The fold an experiment folder was trained on (its config's note), so that --resume sees the same split."""
    import json

    try:
        note = json.loads((folder / "config.json").read_text(encoding="utf-8"))["options"]["note"]
    except (OSError, ValueError, KeyError):
        raise FileNotFoundError(f"{folder} is not an experiment folder of candy train (no readable config.json)") \
            from None
    if not note.startswith("fold "):
        raise ValueError(f"{folder} was not trained by candy train (no fold recorded); resume it from Python")
    return int(note.removeprefix("fold "))


def train_from_args(args: argparse.Namespace) -> list[Any]:
    """Preprocess and train as the parsed arguments say; returns one ``TrainingSummary`` per trained fold.

    Raises ``DatasetError``, ``BundleError``, ``FileNotFoundError`` or ``ValueError`` on unusable input (``run``
    turns them into exit status 2). ``candy demo`` drives training through this function.
    """
    from mipcandy.data.augment.pipeline import NNUNetAugmentation
    from mipcandy.data.nnunet import NNUNetDataset
    from mipcandy.data.preprocess import preprocess_dataset
    from mipcandy.data.roi import RandomROIDataset
    from mipcandy.training.kfold import run_folds

    output = Path(args.output)
    raw = NNUNetDataset(args.dataset)
    data = preprocess_dataset(raw, output / "preprocessed" / Path(args.dataset).resolve().name)
    trainer_class = _trainer_class(args.bundle)

    def make_trainer(fold: int) -> Any:
        train, val = data.fold(fold, num_folds=args.folds)
        patches = RandomROIDataset(train, args.batch_size, seed=0 if args.seed is None else args.seed)
        if not args.no_augmentation:
            patches.augmentation = NNUNetAugmentation.for_patch_size(patches.patch_shape)
        trainer = trainer_class(output, patches, val, device=args.device)
        trainer.note = f"fold {fold}"  # recorded in config.json; --resume reads the fold back from it
        return trainer

    options = {"bundle": args.bundle, "iterations_per_epoch": args.iterations, "ema": args.ema, "amp": args.amp,
               "deep_supervision": args.deep_supervision, "seed": args.seed, "num_workers": args.workers,
               "bundle_options": dict(args.bundle_option)}
    if args.resume:
        trainer = make_trainer(_resumed_fold(Path(args.resume))).recover_from(args.resume)
        return [trainer.continue_training(args.epochs)]
    folds = list(range(args.folds)) if args.fold == "all" else [args.fold]
    return run_folds(make_trainer, folds, args.epochs, **options)


def run(args: argparse.Namespace) -> int:
    """Train; 0 on success, 2 when the dataset, bundle or resume folder cannot be used."""
    from mipcandy.data.dataset import DatasetError
    from mipcandy.plugins import BundleError

    try:
        summaries = train_from_args(args)
    except (DatasetError, BundleError, FileNotFoundError, ValueError) as error:
        print(f"candy train: {error}", file=sys.stderr)
        return 2
    for summary in summaries:
        print(summary.folder)
    return 0
