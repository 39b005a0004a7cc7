"""The ``candy`` command line.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``; the
table below is the only place that lists them. Command modules import torch inside ``run`` only, so
``candy --help`` and ``candy plugins`` start without it.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from mipcandy import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": ("mipcandy.cli.plugins_command", "list installed bundles and their status"),
    "inspect": ("mipcandy.cli.inspect_command", "fingerprint a dataset and save its inspection annotations"),
    "train": ("mipcandy.cli.train_command", "train a bundle on a dataset in nnU-Net raw format"),
    "predict": ("mipcandy.cli.predict_command", "segment images with a trained experiment"),
    "evaluate": ("mipcandy.cli.evaluate_command", "score predicted label files against references"),
    "demo": ("mipcandy.cli.demo_command", "generate, inspect, train, predict and evaluate a synthetic dataset"),
    "ui": ("mipcandy.cli.ui_command", "show the runs tracked in an experiment root in the MLflow web UI"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="candy", description="MIP Candy: medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"mipcandy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        command = import_module(module)
        command.configure(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``candy`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
