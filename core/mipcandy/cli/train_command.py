"""``candy train --dataset DIR [--bundle unet]``: preprocess an nnU-Net raw dataset and train a bundle on it.

The dataset is preprocessed once into ``OUTPUT/preprocessed/<dataset name>`` (nnU-Net's plan from ``inspect()``:
target spacing, normalization), the patch size comes from the inspection of the preprocessed cases, and each run
gets its own folder ``OUTPUT/<dataset>/<bundle>/fold_<k>/<timestamp>/``, printed when done. ``--fold K`` trains
fold K, ``--fold all`` trains on every case (nnU-Net's meaning) and ``--fold cv`` every fold in turn, with a
summary table.

``candy train --resume FOLDER`` continues a run from its folder alone: the bundle, dataset, split, sampling,
options and cache all come from its record (``config.json``). ``--epochs`` may extend it, and ``--device``,
``--workers`` and ``--track`` change how it runs; any other flag is refused unless it equals what was recorded.
A dataset whose cases or files changed since the run started is refused, naming them. Nothing in the folder
changes before every check has passed. torch is imported inside :func:`train_from_args` only.

Under ``torchrun --nproc_per_node=N -m mipcandy train ...`` the N processes train one run data-parallel (see
:mod:`mipcandy.training.distributed`): rank 0 preprocesses first and the others then open its cache, rank 0 alone
creates the experiment folder and prints it. ``--ddp`` refuses to start outside such a launch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mipcandy.cli.arguments import positive_int
from mipcandy.cli.errors import reports_failures

DEFAULTS: dict[str, Any] = {"bundle": "unet", "fold": 0, "folds": 5, "epochs": 1000, "iterations": 250,
                            "batch_size": 2, "deep_supervision": False, "ema": False, "amp": False, "seed": None,
                            "device": "auto", "workers": 0, "bundle_option": [], "no_augmentation": False,
                            "output": "experiments", "dataset": None, "track": "", "ddp": False}
RESUME_SAFE = ("epochs", "device", "workers", "track", "ddp")  # flags a resume may change (not its results)


class ResumeRefused(ValueError):
    """``--resume`` was asked for something the record forbids; nothing was changed."""


def _fold(text: str) -> int | str:
    if text in ("all", "cv"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold index, 'all' (train on every case) or 'cv' (every fold "
                                         f"in turn), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a fold index is >= 0, got {value}")
    return value


def _bundle_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a plain word, e.g. variant=3d


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments (defaults are applied after parsing, so that --resume sees what was given)."""
    parser.add_argument("--bundle", help="the bundle building the network (default: unet)")
    parser.add_argument("--dataset", metavar="DIR", help="nnU-Net raw dataset folder (required unless --resume)")
    parser.add_argument("--fold", type=_fold, help="fold index 0..K-1, 'all' to train on every case (as nnU-Net), "
                                                   "or 'cv' to train every fold in turn (default: 0)")
    parser.add_argument("--folds", type=positive_int, metavar="K", help="number of folds (default: 5)")
    parser.add_argument("--epochs", type=positive_int, help="epochs (default: 1000, as nnU-Net); with --resume, "
                                                            "the new total (default: as recorded)")
    parser.add_argument("--iterations", type=positive_int, help="iterations per epoch (default: 250)")
    parser.add_argument("--batch-size", type=positive_int, help="patches per batch (default: 2)")
    parser.add_argument("--deep-supervision", action="store_true", default=None,
                        help="supervise every decoder output")
    parser.add_argument("--ema", action="store_true", default=None,
                        help="validate and checkpoint an EMA of the weights")
    parser.add_argument("--amp", action="store_true", default=None, help="mixed precision on CUDA")
    parser.add_argument("--seed", type=int, help="random seed (default: drawn and recorded)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: auto)")
    parser.add_argument("--workers", type=int, help="data loading worker processes (default: 0)")
    parser.add_argument("--bundle-option", action="append", type=_bundle_option, metavar="KEY=JSON",
                        help="an option for the bundle's build_network, e.g. hidden_chs=[16,32,64] (repeatable)")
    parser.add_argument("--no-augmentation", action="store_true", default=None,
                        help="train without nnU-Net's default augmentation")
    parser.add_argument("--track", metavar="NAMES", help="tracking frontends for the run's events, comma-separated "
                                                         "(e.g. mlflow,wandb; `candy plugins` lists them)")
    parser.add_argument("--ddp", action="store_true", default=None,
                        help="train data-parallel on the processes torchrun started (detected without this flag; "
                             "with it, a launch without torchrun is refused)")
    parser.add_argument("--resume", metavar="FOLDER", help="continue the experiment in FOLDER from its record")
    parser.add_argument("--output", metavar="DIR", help="where experiment folders go (default: ./experiments)")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line (parsing leaves the others None)."""
    return {name: getattr(args, name, None) for name in DEFAULTS if getattr(args, name, None) is not None}


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {**DEFAULTS, **_given(args)}


def _track(names: str) -> tuple[str, ...]:
    """``mlflow,wandb`` -> ``("mlflow", "wandb")``."""
    return tuple(name.strip() for name in names.split(",") if name.strip())


def _trainer_class(bundle: str) -> Any:
    """The bundle's own training loop when it declares one (``trainer_class`` hook), else the segmentation preset."""
    from mipcandy.plugins import get_plugin_manager
    from mipcandy.presets.segmentation import SegmentationTrainer

    return get_plugin_manager().call(bundle, "trainer_class") or SegmentationTrainer


def train_from_args(args: argparse.Namespace) -> list[Any]:
    """Preprocess and train (or resume) as the parsed arguments say; returns one ``TrainingSummary`` per run.

    Raises ``DatasetError``, ``BundleError``, ``FileNotFoundError`` or ``ValueError`` on unusable input (``run``
    turns them into exit status 2). ``candy demo`` drives training through this function.
    """
    from mipcandy.training.distributed import join

    settings = _settings(args)
    session = join(settings["device"], require=settings["ddp"])
    if args.resume:
        return [_resume(Path(args.resume), _given(args), session)]
    return _train(settings, session)


def _train(settings: dict[str, Any], session: Any) -> list[Any]:
    """A new run (or one per fold) as ``settings`` say, in the joined ``session`` (``None``: one process)."""
    if settings["dataset"] is None:
        raise ValueError("--dataset DIR is required (or --resume FOLDER to continue a run)")
    fold, num_folds = settings["fold"], settings["folds"]
    if isinstance(fold, int) and fold >= num_folds:
        raise ValueError(f"--fold {fold} does not exist with --folds {num_folds}: use 0..{num_folds - 1}, 'all' or "
                         "'cv'")
    from mipcandy.plugins import get_plugin_manager

    get_plugin_manager().require(settings["bundle"])  # before the (long) preprocessing
    trainer_class = _trainer_class(settings["bundle"])
    from rich.console import Console

    from mipcandy.data.nnunet import NNUNetDataset
    from mipcandy.data.preprocess import case_file_digests, preprocess_dataset
    from mipcandy.training.distributed import main_first
    from mipcandy.training.kfold import run_folds
    from mipcandy.training.spec import DataRecord

    output = Path(settings["output"])
    dataset_folder = Path(settings["dataset"]).resolve()
    raw = NNUNetDataset(dataset_folder)
    case_files = case_file_digests(raw)
    with main_first(session):  # one process builds the cache, the others open it
        data = preprocess_dataset(raw, output / "preprocessed" / dataset_folder.name)

    def make_trainer(fold: int | str) -> Any:
        train, val = data.fold(fold, num_folds=num_folds)
        record = DataRecord(dataset=str(dataset_folder), cache=str(data.cache_dir), case_files=case_files, fold=fold,
                            num_folds=num_folds, train_cases=tuple(train.case_ids), val_cases=tuple(val.case_ids))
        patches = _patches(train, settings["batch_size"], 0 if settings["seed"] is None else settings["seed"],
                           augment=not settings["no_augmentation"])
        return trainer_class(output, patches, val, device=settings["device"], data_record=record)

    options = {"bundle": settings["bundle"], "iterations_per_epoch": settings["iterations"],
               "ema": settings["ema"], "amp": settings["amp"], "deep_supervision": settings["deep_supervision"],
               "seed": settings["seed"], "num_workers": settings["workers"], "track": _track(settings["track"]),
               "bundle_options": dict(settings["bundle_option"])}
    folds = list(range(num_folds)) if fold == "cv" else [fold]
    console = Console(quiet=session is not None and not session.world.is_main)
    return run_folds(make_trainer, folds, settings["epochs"], console=console, **options)


def _patches(train: Any, batch_size: int, seed: int, *, augment: bool, patch_size: Any = None,
             augmentation: dict[str, Any] | None = None) -> Any:
    """Training batches of ``train``: nnU-Net's augmentation for the patch (or the recorded one)."""
    from mipcandy.data.augment.pipeline import NNUNetAugmentation
    from mipcandy.data.roi import RandomROIDataset

    patches = RandomROIDataset(train, batch_size, seed=seed, patch_shape=patch_size)
    if augmentation is not None:
        patches.augmentation = NNUNetAugmentation(**augmentation)
    elif augment:
        patches.augmentation = NNUNetAugmentation.for_patch_size(patches.patch_shape)
    return patches


def _recorded_flags(spec: Any) -> dict[str, Any]:
    """What the record says each flag was."""
    options, data, sampling = spec.options, spec.data, spec.sampling or {}
    return {"bundle": options.bundle, "dataset": data.dataset, "fold": data.fold, "folds": data.num_folds,
            "iterations": options.iterations_per_epoch, "batch_size": sampling.get("batch_size"),
            "deep_supervision": options.deep_supervision, "ema": options.ema, "amp": options.amp,
            "seed": options.seed, "bundle_option": options.bundle_options,
            "no_augmentation": sampling.get("augmentation") is None, "output": None}


def _check_flags(folder: Path, spec: Any, given: dict[str, Any]) -> None:
    """Refuse flags that would change what the run is, showing what was recorded."""
    recorded = _recorded_flags(spec)
    problems = []
    for name, value in given.items():
        if name in RESUME_SAFE:
            continue
        if name == "bundle_option":
            value = dict(value)
        if name == "dataset":
            value = str(Path(value).resolve())
        if name == "output" or value != recorded[name]:
            shown = "" if name == "output" else f" (recorded: {json.dumps(recorded[name])})"
            problems.append(f"--{name.replace('_', '-')} {json.dumps(value) if name != 'output' else value}{shown}")
    if problems:
        raise ResumeRefused(f"--resume {folder} continues the recorded run; these flags would change it: "
                            f"{', '.join(problems)}. Drop them (only --epochs, --device, --workers, --track and --ddp "
                            "may change), or start a new run without --resume")


def _resume(folder: Path, given: dict[str, Any], session: Any) -> Any:
    """Restore everything from the folder's record, check it, then continue training (in ``session``)."""
    from mipcandy.training.distributed import main_first
    from mipcandy.training.spec import read_experiment_spec

    spec = read_experiment_spec(folder)
    if spec.data is None or spec.data.dataset is None or spec.data.cache is None or spec.options.bundle is None:
        raise ResumeRefused(f"{folder} was not trained by candy train (its record names no dataset or bundle); resume "
                            "it from Python with trainer.recover_from(folder).continue_training()")
    _check_flags(folder, spec, given)
    from mipcandy.data.nnunet import NNUNetDataset
    from mipcandy.data.preprocess import case_file_digests, preprocess_dataset
    from mipcandy.plugins import get_plugin_manager

    get_plugin_manager().require(spec.options.bundle)
    raw = NNUNetDataset(spec.data.dataset)
    changes = spec.data.changes(case_file_digests(raw) or {}) if spec.data.case_files is not None else []
    if changes:
        raise ResumeRefused(f"the dataset {spec.data.dataset} changed since {folder} started ({'; '.join(changes)}); "
                            "a resumed run must see the data it trained on. Restore the files, or start a new run")
    with main_first(session):
        data = preprocess_dataset(raw, spec.data.cache, plan=spec.preprocessing_plan)
    sampling = spec.sampling or {}
    augmentation = sampling.get("augmentation") or {}
    patches = _patches(data.subset(spec.data.train_cases), int(sampling["batch_size"]), int(sampling["seed"]),
                       augment=False, patch_size=sampling["patch_size"], augmentation=augmentation.get("settings"))
    trainer = _trainer_class(spec.options.bundle)(folder.parent, patches, data.subset(spec.data.val_cases),
                                                  device=given.get("device", DEFAULTS["device"]))
    runtime = {"num_workers": given["workers"]} if "workers" in given else {}
    if "track" in given:
        runtime["track"] = _track(given["track"])
    return trainer.recover_from(folder).continue_training(given.get("epochs"), **runtime)


@reports_failures("candy train")
def run(args: argparse.Namespace) -> int:
    """Train; 0 on success, 2 when the dataset, bundle or resume folder cannot be used (the CLI's error policy)."""
    from mipcandy.training.distributed import is_main_process

    summaries = train_from_args(args)
    if is_main_process():
        for summary in summaries:
            print(summary.folder)
    return 0
