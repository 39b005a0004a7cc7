"""``candy demo``: the whole workflow on a built-in synthetic dataset, in a few minutes on a CPU.

It runs the same commands a user would, in order: generate a dataset in nnU-Net raw format (with held-out
test cases), ``candy inspect`` it, ``candy train`` the unet bundle, ``candy predict`` the held-out cases with the
sliding window, and ``candy evaluate`` them; then it prints where everything is. torch loads inside ``run``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType

from mipcandy.cli.arguments import positive_int

DATASET_NAME = "Dataset900_CandyDemo"
SIZES = {  # (training cases, held-out cases, shape): small enough for a 2-core CPU
    2: (10, 4, (96, 96)),
    3: (8, 3, (32, 48, 48)),
}
HIDDEN_CHANNELS = "[8,16,32,64]"  # a narrow U-Net: a few seconds per epoch on a CPU
QUICK_SHAPES = {2: (48, 48), 3: (24, 32, 32)}



def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="2D or 3D data (default: 3)")
    parser.add_argument("--epochs", type=positive_int, default=20, help="training epochs (default: 20)")
    parser.add_argument("--iterations", type=positive_int, default=10, help="iterations per epoch (default: 10)")
    parser.add_argument("--output", default="candy-demo", metavar="DIR",
                        help="folder for the dataset, experiment, predictions and report (default: ./candy-demo)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--quick", action="store_true", help="tiny data and one short epoch (for tests)")


def _invoke(command: ModuleType, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` exactly as ``candy <command>`` would."""
    parser = argparse.ArgumentParser(prog=f"candy {command.__name__.rsplit('.', 1)[-1].removesuffix('_command')}")
    command.configure(parser)
    return parser.parse_args(argv)


def _step(console: object, number: int, text: str) -> None:
    console.rule(f"[bold]{number}/5[/] {text}")  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    """Generate, inspect, train, predict, evaluate; 0 on success."""
    from rich.console import Console

    from mipcandy.cli import evaluate_command, inspect_command, predict_command, train_command
    from mipcandy.data.synthetic import make_synthetic_dataset

    console = Console()
    output = Path(args.output)
    if (output / "raw" / DATASET_NAME).exists():
        print(f"candy demo: {output} already holds a demo; remove it or pass --output NEW_DIR", file=sys.stderr)
        return 2
    num_train, num_test, shape = SIZES[args.ndim]
    epochs, iterations = args.epochs, args.iterations
    if args.quick:
        num_train, num_test, shape, epochs, iterations = 4, 2, QUICK_SHAPES[args.ndim], 1, 2

    _step(console, 1, f"Generating a synthetic {args.ndim}D dataset ({num_train} training, {num_test} test cases)")
    raw = make_synthetic_dataset(output / "raw" / DATASET_NAME, ndim=args.ndim, num_cases=num_train,
                                 num_test_cases=num_test, shape=shape, seed=0)

    _step(console, 2, "Inspecting it (candy inspect)")
    if inspect_command.run(_invoke(inspect_command, [str(raw)])) != 0:
        return 1

    _step(console, 3, f"Training the unet bundle for {epochs} epochs (candy train)")
    summaries = train_command.train_from_args(_invoke(train_command, [
        "--bundle", "unet", "--dataset", str(raw), "--fold", "0", "--folds", "2", "--epochs", str(epochs),
        "--iterations", str(iterations), "--seed", "0", "--device", args.device, "--output", str(output),
        "--bundle-option", f"hidden_chs={HIDDEN_CHANNELS}"]))
    experiment = summaries[0].folder

    _step(console, 4, "Predicting the held-out cases with the sliding window (candy predict)")
    predictions = output / "predictions"
    status = predict_command.run(_invoke(predict_command, [
        "--experiment", str(experiment), str(raw / "imagesTs"), str(predictions), "--device", args.device]))
    if status != 0:
        return status

    _step(console, 5, "Evaluating them (candy evaluate)")
    report = output / "evaluation.json"
    status = evaluate_command.run(_invoke(evaluate_command, [
        str(predictions), str(raw / "labelsTs"), "--labels", str(raw), "--nsd-tolerance", "2",
        "--json", str(report), "--csv", str(output / "evaluation.csv")]))
    if status != 0:
        return status

    console.rule("[bold green]Done")
    console.print(f"experiment folder: {experiment}")
    console.print(f"  plots:           {experiment / 'progress.png'}, {experiment / 'class_dice.png'}")
    console.print(f"  previews:        {experiment / 'preview'}")
    console.print(f"predictions:       {predictions}")
    console.print(f"evaluation:        {report}")
    return 0
