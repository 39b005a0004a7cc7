"""Consoles for the commands and the trainer: a terminal gets rich's defaults; a file or pipe (CI logs,
``| tee``) gets whole lines.

rich wraps at 80 columns and shrinks table columns to fit when it cannot ask a terminal for its width, which
splits log lines and truncates paths in logs. Off a terminal the console neither wraps printed text nor narrows a
table; whatever fills the width (a rule) is drawn :data:`RULE_WIDTH` wide instead.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

UNLIMITED_WIDTH = 10_000  # wider than any table we print: columns keep their natural width
RULE_WIDTH = 80


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that does not wrap or truncate when it writes to a file or a pipe."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, soft_wrap=True, width=UNLIMITED_WIDTH)


def print_rule(console: Console, title: str) -> None:
    """A horizontal rule with a title, as wide as the terminal, or :data:`RULE_WIDTH` off a terminal."""
    from rich.rule import Rule

    console.print(Rule(title), width=None if console.is_terminal else RULE_WIDTH)
