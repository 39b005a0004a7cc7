"""``candy plugins``: what bundles are installed, and whether each one works."""
from __future__ import annotations

import argparse
import json
import sys

from mipcandy import __version__


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per bundle")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any bundle is broken")
    parser.add_argument("--hook", metavar="NAME", help="only bundles implementing this hook")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of broken bundles")


def run(args: argparse.Namespace) -> int:
    """List bundles as a table (default) or JSON; exit 0 unless ``--strict`` and a bundle is broken."""
    from mipcandy.plugins import load_bundles

    records = sorted(load_bundles(), key=lambda r: r.name)
    if args.hook:
        records = [r for r in records if args.hook in r.hooks]
    if args.json:
        json.dump([r.to_json() for r in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(records, verbose=args.verbose)
    broken = [r for r in records if r.status in ("error", "invalid")]
    return 1 if args.strict and broken else 0


def _print_table(records: list, *, verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"MIP Candy {__version__}: bundles", title_justify="left")
    for column in ("NAME", "DISTRIBUTION", "VERSION", "HOOKS", "STATUS"):
        table.add_column(column, overflow="fold")
    styles = {"ok": "green", "blocked": "yellow", "error": "red", "invalid": "red"}
    for r in records:
        status = r.status if r.error is None else f"{r.status}: {r.error}"
        table.add_row(r.name, r.distribution or "-", r.version or "-", ", ".join(r.hooks) or "-",
                      f"[{styles[r.status]}]{status}[/]")
    if records:
        console.print(table)
    else:
        console.print(f"MIP Candy {__version__}: no bundles found. Install one, e.g. `pip install candy-unet`.")
    if verbose:
        for r in records:
            if r.traceback:
                console.rule(f"{r.name}: traceback")
                console.print(r.traceback, markup=False, highlight=False)
