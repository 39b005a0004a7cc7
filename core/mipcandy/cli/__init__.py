"""The ``candy`` command line.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``; the
table below is the only place that lists them. Command modules import torch inside ``run`` only, so
``candy --help`` and ``candy plugins`` start without it. Every command runs under one error policy
(:mod:`mipcandy.cli.errors`): an expected failure is one message on stderr and exit status 2; ``--debug`` (before
or after the command) or ``CANDY_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from mipcandy import __version__
from mipcandy.cli.errors import DEBUG_VARIABLE, debugging, reports_failures

DEBUG_HELP = f"show the traceback of a failure instead of a one-line message (or set {DEBUG_VARIABLE}=1)"

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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        command = import_module(module)
        command.configure(sub)
        # SUPPRESS: the subcommand's --debug only sets the flag, it never resets one given before the command.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        sub.set_defaults(_run=reports_failures(f"candy {name}")(command.run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``candy`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    with debugging(args.debug):
        return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
