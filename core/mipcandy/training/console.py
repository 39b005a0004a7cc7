"""Rich renderables of the training console: sanity summary, end-of-epoch summary, per-case validation table.

They only build tables; :class:`~mipcandy.training.experiment.ExperimentWriter` prints them (and logs them), so
nothing here writes anywhere.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from mipcandy.training.sanity import SanityCheckResult
from mipcandy.training.validation import ValidationResult

MAX_CASE_ROWS = 12


def format_duration(seconds: float) -> str:
    """``1h 02m``, ``3m 05s`` or ``4.2s``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def format_count(value: float) -> str:
    """``1.23M`` / ``4.56G`` style counts."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:g}"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def sanity_table(result: SanityCheckResult, device: str) -> Table:
    """Network size and cost, as measured on the first real batch."""
    table = Table(title="Sanity check passed", title_justify="left", show_header=False)
    table.add_column("property")
    table.add_column("value")
    table.add_row("input batch", str(result.input_shape))
    table.add_row("output(s)", ", ".join(str(s) for s in result.output_shapes))
    table.add_row("parameters", f"{format_count(result.num_params)} ({format_count(result.num_trainable_params)} "
                                f"trainable)")
    table.add_row("MACs per sample", format_count(result.macs_per_sample))
    table.add_row("device", device)
    return table


def _pairs(row: Mapping[str, Any], keys: Any) -> str:
    return "  ".join(f"{key} [bold]{_number(row[key])}[/bold]" for key in keys)


def epoch_table(epoch: int, num_epochs: int, row: Mapping[str, Any], *, remaining_seconds: float,
                improved: bool, prediction: str | None) -> Table:
    """One epoch's values on three lines (training, validation, time), new bests highlighted."""
    table = Table.grid(padding=(0, 2))
    table.title = f"Epoch {epoch}/{num_epochs}" + ("  new best" if improved else "")
    table.title_justify, table.title_style = "left", "bold green" if improved else "bold"
    table.add_column(style="dim")
    table.add_column()
    numeric = [k for k, v in row.items() if k != "epoch" and isinstance(v, int | float)
               and not (isinstance(v, float) and math.isnan(v))]
    train = [k for k in numeric if not k.startswith(("val ", "predicted", "epoch duration"))]
    val = [k for k in numeric if k.startswith("val ")]
    table.add_row("train", _pairs(row, train))
    if val:
        worst = row.get("worst case")
        table.add_row("validation", _pairs(row, val) + (f"  worst [bold red]{worst}[/bold red]" if worst else ""))
    timing = f"epoch [bold]{format_duration(row.get('epoch duration', math.nan))}[/bold]  time left " \
             f"[bold]{format_duration(remaining_seconds)}[/bold]"
    table.add_row("time", timing + (f"  forecast {prediction}" if prediction else ""))
    return table


def validation_table(result: ValidationResult, *, max_rows: int = MAX_CASE_ROWS) -> Table:
    """Per-case metrics, worst first; the worst case is highlighted."""
    cases = sorted(result.cases, key=lambda c: (not math.isnan(c.score), c.score))
    keys = list(dict.fromkeys(k for c in cases for k in c.metrics))
    hidden = max(0, len(cases) - max_rows)
    title = f"Validation: {len(cases)} cases, mean score {_number(result.score)}"
    table = Table(title=title + (f" ({hidden} best cases not shown)" if hidden else ""), title_justify="left")
    table.add_column("case")
    table.add_column("score", justify="right")
    for key in keys:
        table.add_column(key, justify="right")
    worst = result.worst
    for case in cases[:max_rows]:
        style = "bold red" if case is worst else None
        table.add_row(Text(case.case_id + ("  (worst)" if case is worst else ""), style=style or ""),
                      _number(case.score), *(_number(case.metrics.get(k, math.nan)) for k in keys), style=style)
    return table
