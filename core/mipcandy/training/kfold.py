"""Cross-validation runs: one training per fold, sequentially, and a summary table across folds."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from mipcandy.console import make_console
from mipcandy.data.folds import Fold
from mipcandy.training.trainer import Trainer, TrainingSummary


def fold_table(folds: Sequence[Fold], summaries: Sequence[TrainingSummary]) -> Table:
    """Best smoothed score and epoch of every fold, plus their mean."""
    table = Table(title="Cross-validation", title_justify="left")
    for column in ("fold", "best score", "best epoch", "epochs", "folder"):
        table.add_column(column, justify="right" if column != "folder" else "left")
    for fold, summary in zip(folds, summaries, strict=True):
        table.add_row(str(fold), f"{summary.best_score:.4f}", str(summary.best_epoch), str(summary.epochs),
                      str(summary.folder))
    finite = [s.best_score for s in summaries if math.isfinite(s.best_score)]
    if finite:
        table.add_row("mean", f"{sum(finite) / len(finite):.4f}", "", "", "", style="bold")
    return table


def run_folds(make_trainer: Callable[[Fold], Trainer], folds: Sequence[Fold], num_epochs: int, *,
              console: Console | None = None, **options: Any) -> list[TrainingSummary]:
    """Train ``make_trainer(fold)`` for each fold in turn and print the summary table.

    ``make_trainer`` builds the trainer of one fold (its data split, e.g. ``dataset.fold(k)``); ``options`` go to
    every ``train`` call.
    """
    summaries = [make_trainer(fold).train(num_epochs, **options) for fold in folds]
    (console or make_console()).print(fold_table(folds, summaries))
    return summaries
