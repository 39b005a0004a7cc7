"""``candy demo``: the whole workflow on a built-in synthetic dataset, in under 3 minutes on a 2-core CPU.

It runs the same commands a user would, in order: generate a dataset in nnU-Net raw format (with held-out
test cases), ``candy inspect`` it, ``candy train`` the unet bundle, ``candy predict`` the held-out cases with the
sliding window, and ``candy evaluate`` them; then it prints where everything is. The unet bundle is checked
first. A folder left by an earlier demo (it holds :data:`MARKER`) is replaced; any other non-empty folder is
refused. Everything it writes stays in that folder (matplotlib's font cache included, unless MPLCONFIGDIR is
set). torch loads inside ``run``.
"""
from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mipcandy.cli.arguments import positive_int
from mipcandy.cli.errors import reports_failures
from mipcandy.console import make_console, print_rule

DATASET_NAME = "Dataset900_CandyDemo"
BUNDLE = "unet"
MARKER = "candy-demo.txt"
INSTALL_HINT = "From a clone of the repository: `.venv/bin/pip install -c constraints.txt -e plugins/unet`."


@dataclass(frozen=True)
class DemoPlan:
    """The dataset and schedule of one demo size, chosen so that every class reaches Dice >= 0.7 in time."""

    num_train: int
    num_test: int
    shape: tuple[int, ...]
    object_scale: tuple[float, float]  # object size, a fraction of the body (see make_synthetic_dataset)
    min_voxels: int  # no class all but hidden under another: a case scores how well the network segments it
    hidden_channels: str  # --bundle-option hidden_chs=...
    epochs: int
    iterations: int


PLANS = {
    2: DemoPlan(8, 3, (96, 96), (0.2, 0.35), 100, "[8,16,32,64]", 30, 30),
    3: DemoPlan(16, 5, (24, 32, 32), (0.35, 0.5), 100, "[8,16,32]", 20, 30),
}
QUICK = {2: DemoPlan(4, 2, (48, 48), (0.3, 0.45), 4, "[8,16]", 1, 2),
         3: DemoPlan(4, 2, (16, 24, 24), (0.3, 0.45), 4, "[8,16]", 1, 2)}
MODALITY = "MRI"
CHANNELS = 2  # two sequences: a class between two others in one is at an extreme in the other
DATA_SEED = 2  # its levels (tissue, ellipsoid, box): 140, 60, 220 in channel 0 and 60, 220, 140 in channel 1
BIAS_STRENGTH = 0.1  # a mild bias field, which keeps the levels apart


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="2D or 3D data (default: 3)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"training epochs (default: {PLANS[3].epochs} in 3D, {PLANS[2].epochs} in 2D)")
    parser.add_argument("--iterations", type=positive_int, default=None,
                        help=f"iterations per epoch (default: {PLANS[3].iterations} in 3D, {PLANS[2].iterations} "
                             "in 2D)")
    parser.add_argument("--output", default="candy-demo", metavar="DIR",
                        help="folder for the dataset, experiment, predictions and report (default: ./candy-demo); "
                             "an earlier demo there is replaced")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default: 1: the demo's small network gains little from more, "
                             "and on busy cores OpenMP's waiting threads made it 10 times slower)")
    parser.add_argument("--quick", action="store_true", help="tiny data and one short epoch (for tests)")


def _invoke(command: ModuleType, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` exactly as ``candy <command>`` would."""
    parser = argparse.ArgumentParser(prog=f"candy {command.__name__.rsplit('.', 1)[-1].removesuffix('_command')}")
    command.configure(parser)
    return parser.parse_args(argv)


def require_bundle() -> None:
    """Fail before any work when the unet bundle cannot be used, saying how to install it."""
    from mipcandy.plugins import BundleError, get_bundle

    try:
        get_bundle(BUNDLE)
    except BundleError as error:
        raise BundleError(f"the demo trains the {BUNDLE!r} bundle, which cannot be used: {error}\n{INSTALL_HINT}") \
            from None


def prepare_output(output: Path) -> bool:
    """Make ``output`` ready for a new demo; True when an earlier demo's folder was replaced.

    Only a folder marked by an earlier demo is removed: any other non-empty folder is refused, untouched.
    """
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file; give a folder for the demo")
    replaced = (output / MARKER).is_file()
    if replaced:
        shutil.rmtree(output)
    elif output.is_dir() and any(output.iterdir()):
        raise FileExistsError(f"--output {output} is not empty and was not made by candy demo (no {MARKER}); "
                              "choose a new or empty folder")
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("Made by `candy demo`; a later demo replaces this folder.\n", encoding="utf-8")
    return replaced


@reports_failures("candy demo")
def run(args: argparse.Namespace) -> int:
    """Generate, inspect, train, predict, evaluate; 0 on success."""
    from mipcandy.cli import evaluate_command, inspect_command, predict_command, train_command
    from mipcandy.data.synthetic import make_synthetic_dataset

    require_bundle()
    import torch

    torch.set_num_threads(args.threads)
    console = make_console()
    output = Path(args.output)
    plan = (QUICK if args.quick else PLANS)[args.ndim]
    epochs, iterations = args.epochs or plan.epochs, args.iterations or plan.iterations
    if prepare_output(output):
        console.print(f"Replacing the earlier demo in {output}", highlight=False)
    os.environ.setdefault("MPLCONFIGDIR", str(output.resolve() / ".matplotlib"))  # its font cache stays here too

    print_rule(console, f"1/5 Generating a synthetic {args.ndim}D dataset ({plan.num_train} training, "
                        f"{plan.num_test} test cases)")
    raw = make_synthetic_dataset(output / "raw" / DATASET_NAME, ndim=args.ndim, num_cases=plan.num_train,
                                 num_test_cases=plan.num_test, shape=plan.shape, seed=DATA_SEED,
                                 modality=MODALITY, num_channels=CHANNELS, object_scale=plan.object_scale,
                                 bias_strength=BIAS_STRENGTH, min_voxels=plan.min_voxels, progress=console.is_terminal)

    print_rule(console, "2/5 Inspecting it (candy inspect)")
    status = inspect_command.run(_invoke(inspect_command, [str(raw)]))
    if status != 0:
        return status

    print_rule(console, f"3/5 Training the {BUNDLE} bundle for {epochs} epochs (candy train)")
    summaries = train_command.train_from_args(_invoke(train_command, [
        "--bundle", BUNDLE, "--dataset", str(raw), "--fold", "0", "--folds", "4", "--epochs", str(epochs),
        "--iterations", str(iterations), "--seed", "0", "--device", args.device, "--output", str(output),
        "--no-augmentation", "--bundle-option", f"hidden_chs={plan.hidden_channels}"]))
    experiment = summaries[0].folder

    print_rule(console, "4/5 Predicting the held-out cases with the sliding window (candy predict)")
    predictions = output / "predictions"
    status = predict_command.run(_invoke(predict_command, [
        "--experiment", str(experiment), str(raw / "imagesTs"), str(predictions), "--device", args.device]))
    if status != 0:
        return status

    print_rule(console, "5/5 Evaluating them (candy evaluate)")
    report = output / "evaluation.json"
    status = evaluate_command.run(_invoke(evaluate_command, [
        str(predictions), str(raw / "labelsTs"), "--labels", str(raw), "--nsd-tolerance", "2",
        "--json", str(report), "--csv", str(output / "evaluation.csv")]))
    if status != 0:
        return status

    print_rule(console, "Done")
    console.print(f"experiment folder: {experiment}", highlight=False)
    console.print(f"  plots:           {experiment / 'progress.png'}, {experiment / 'class_dice.png'}", highlight=False)
    console.print(f"  previews:        {experiment / 'preview'}", highlight=False)
    console.print(f"predictions:       {predictions}", highlight=False)
    console.print(f"evaluation:        {report}", highlight=False)
    return 0
