"""``candy plugins``: which bundles and tracking frontends are installed, and whether each one works."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from mipcandy import __version__

if TYPE_CHECKING:
    from mipcandy.plugins import PluginManager

_STYLES = {"ok": "green", "blocked": "yellow", "error": "red", "invalid": "red", "conflict": "red"}
_BROKEN = ("error", "invalid", "conflict")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per plugin (with its "
                                                           "kind: bundle or frontend)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any plugin is broken")
    parser.add_argument("--hook", metavar="NAME", help="only plugins implementing this hook")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of broken plugins")


def run(args: argparse.Namespace) -> int:
    """List plugins as tables (default) or JSON; exit 0 unless ``--strict`` and a plugin is broken."""
    from mipcandy.plugins import get_plugin_manager

    manager = get_plugin_manager()
    records = sorted(manager.records, key=lambda r: (r.kind, r.name))
    if args.hook:
        records = [r for r in records if args.hook in r.hooks]
    if args.json:
        json.dump([r.to_json() for r in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_tables(records, manager, verbose=args.verbose)
    broken = [r for r in records if r.status in _BROKEN]
    return 1 if args.strict and broken else 0


def _why_none(manager: PluginManager) -> str:
    """Why nothing is listed: none installed, autoload off, or all filtered out by the allowlist."""
    filtered = manager.filtered
    if not filtered:
        return "none installed. Install a bundle, e.g. `pip install candy-unet`."
    names = ", ".join(filtered)
    if not manager.autoload:
        value = os.environ.get("CANDY_DISABLE_PLUGIN_AUTOLOAD", "")
        return f"{len(filtered)} installed ({names}) but not loaded: CANDY_DISABLE_PLUGIN_AUTOLOAD={value}."
    allow = os.environ.get("CANDY_PLUGINS", "")
    return f"{len(filtered)} installed ({names}) but filtered out by CANDY_PLUGINS={allow!r}."


def _print_tables(records: list, manager: PluginManager, *, verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=not sys.stdout.isatty())
    for kind, title in (("bundle", "bundles"), ("frontend", "tracking frontends")):
        rows = [r for r in records if r.kind == kind]
        if not rows:
            if kind == "bundle":
                console.print(f"MIP Candy {__version__}: no bundles loaded: {_why_none(manager)}")
            continue
        table = Table(title=f"MIP Candy {__version__}: {title}", title_justify="left")
        for column in ("NAME", "DISTRIBUTION", "VERSION", "HOOKS", "STATUS"):
            table.add_column(column, overflow="fold")
        for r in rows:
            status = r.status if r.error is None else f"{r.status}: {r.error}"
            table.add_row(r.name, r.distribution or "-", r.version or "-", ", ".join(r.hooks) or "-",
                          f"[{_STYLES[r.status]}]{status}[/]")
        console.print(table)
    if verbose:
        for r in records:
            if r.traceback:
                console.rule(f"{r.name}: traceback")
                console.print(r.traceback, markup=False, highlight=False)
