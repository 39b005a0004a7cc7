"""Metric curves written to the experiment folder every epoch: ``progress.png``, per-loss and per-class plots.

``history`` maps a metric name to its per-epoch values, epoch 1 first (the columns of ``metrics.csv``). Epochs
without a value (no validation that epoch) hold NaN; lines join the epochs that have one. One figure per call,
kept cheap (100 dpi, fixed layout, fast PNG compression) because the trainer redraws them every epoch.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mipcandy.visualization._figure import new_figure, save_figure
from mipcandy.visualization.colors import label_palette

# history keys read by plot_progress (the trainer's metrics.csv columns)
TRAIN_LOSS = "combined loss"
VAL_LOSS = "val loss"
VAL_SCORE = "val score"
PREDICTED_MAX = "predicted max"
EPOCH_DURATION = "epoch duration"
LEARNING_RATE = "learning rate"
CLASS_DICE_PREFIX = "val dice "

History = Mapping[str, Sequence[float]]


def ema_curve(values: Sequence[float], smoothing: float = 0.9) -> np.ndarray:
    """Exponential moving average ``smoothing · old + (1 − smoothing) · new``, seeded with the first value.

    The rule nnU-Net applies to the pseudo Dice before choosing ``checkpoint_best``. NaN entries (epochs
    without validation) stay NaN and leave the average unchanged.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
    smoothed = np.full(len(values), np.nan)
    current = math.nan
    for index, value in enumerate(values):
        if math.isfinite(value):
            current = value if math.isnan(current) else smoothing * current + (1.0 - smoothing) * value
            smoothed[index] = current
    return smoothed


def _finite_line(axes: Axes, values: Sequence[float] | None, **style: object) -> Line2D | None:
    """Plot the finite values over 1-based epochs, joined across NaN gaps; markers when points are sparse."""
    if values is None:
        return None
    y = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(y)
    if not keep.any():
        return None
    epochs = np.arange(1, len(y) + 1)[keep]
    if keep.sum() < len(y) or keep.sum() < 2:
        style.setdefault("marker", "o")
        style.setdefault("markersize", 3)
    (line,) = axes.plot(epochs, y[keep], **style)
    return line


def _finish_axes(axes: Axes, title: str, ylabel: str) -> None:
    """Title, labels, integer epoch ticks and a light grid; few ticks and a fixed title position keep it cheap."""
    axes.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    axes.yaxis.set_major_locator(MaxNLocator(nbins=5))
    axes.grid(True, alpha=0.3)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.set_title(title, y=1.0, pad=4)  # an explicit y skips matplotlib's costly automatic title placement


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="grey")


def _series(history: History, key: str) -> Sequence[float] | None:
    values = history.get(key)
    return values if values is not None and len(values) > 0 else None


def plot_progress(history: History, path: str | os.PathLike[str], *, smoothing: float = 0.9) -> None:
    """Write nnU-Net-style ``progress.png``: losses and validation score, epoch duration, learning rate.

    Panel 1: ``combined loss`` (blue) and ``val loss`` (red) on the left axis; ``val score`` (green dots), its
    EMA (green line) and the latest ``predicted max`` (dashed) on the right axis. Panel 2: ``epoch duration``
    in seconds. Panel 3: ``learning rate``. Missing keys are left out; an empty panel says so.
    """
    figure = new_figure(900, 800)
    grid = figure.add_gridspec(3, 1, height_ratios=(2, 1, 1), left=0.08, right=0.9, top=0.95, bottom=0.06,
                               hspace=0.4)
    losses = figure.add_subplot(grid[0])
    scores = losses.twinx()
    handles = [_finite_line(losses, _series(history, TRAIN_LOSS), color="tab:blue", label="train loss"),
               _finite_line(losses, _series(history, VAL_LOSS), color="tab:red", label="val loss")]
    score = _series(history, VAL_SCORE)
    handles += [_finite_line(scores, score, color="tab:green", linestyle=":", label="val score"),
                _finite_line(scores, None if score is None else ema_curve(score, smoothing), color="tab:green",
                             label=f"val score EMA ({smoothing:g})")]
    predicted = [value for value in history.get(PREDICTED_MAX, ()) if math.isfinite(value)]
    if predicted:
        handles.append(scores.axhline(predicted[-1], color="tab:purple", linestyle="--", linewidth=1,
                                      label=f"predicted max {predicted[-1]:.4f}"))
    handles = [handle for handle in handles if handle is not None]
    if handles:
        losses.legend(handles=handles, loc="center right", fontsize=8, framealpha=0.8)
    else:
        _no_data(losses)
    _finish_axes(losses, "losses and validation score", "loss")
    scores.set_ylabel("score")
    scores.yaxis.set_major_locator(MaxNLocator(nbins=5))
    lr_axes = figure.add_subplot(grid[2])
    for axes, key, title, ylabel in ((figure.add_subplot(grid[1]), EPOCH_DURATION, "epoch duration", "seconds"),
                                     (lr_axes, LEARNING_RATE, "learning rate", "learning rate")):
        if _finite_line(axes, _series(history, key), color="tab:blue") is None:
            _no_data(axes)
        _finish_axes(axes, title, ylabel)
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))  # "1e-2" offset instead of long labels
    save_figure(figure, path)


def plot_series(history: History, keys: Sequence[str], path: str | os.PathLike[str], *, title: str,
                ylabel: str, labels: Sequence[str] | None = None,
                ylim: tuple[float, float] | None = None) -> None:
    """Write one line plot of the named ``history`` keys over epochs (e.g. one loss component).

    :param labels: legend entries, one per key (the keys themselves by default).
    :param ylim: fixed y range, e.g. ``(0, 1)`` for Dice.
    """
    missing = [key for key in keys if key not in history]
    if missing or not keys:
        raise ValueError(f"plot_series({title!r}): no history for {missing or 'any key'}; "
                         f"available: {sorted(history)}")
    labels = list(keys) if labels is None else list(labels)
    if len(labels) != len(keys):
        raise ValueError(f"plot_series({title!r}): {len(labels)} labels for {len(keys)} keys")
    legend_columns = 1 + (len(keys) - 1) // 16
    figure = new_figure(800 + 110 * legend_columns * (len(keys) > 1), 450)
    right = 1 - 110 * legend_columns / figure.bbox.width if len(keys) > 1 else 0.97
    axes = figure.add_axes((0.09, 0.12, right - 0.09, 0.79))
    colours = label_palette(len(keys) + 1)[1:]
    drawn = [_finite_line(axes, history[key], color=colour, label=label)
             for key, label, colour in zip(keys, labels, colours, strict=True)]
    if not any(line is not None for line in drawn):
        _no_data(axes)
    elif len(keys) > 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, ncols=legend_columns,
                    borderaxespad=0)
    if ylim is not None:
        axes.set_ylim(*ylim)
    _finish_axes(axes, title, ylabel)
    save_figure(figure, path)


def plot_class_dice(history: History, path: str | os.PathLike[str], *,
                    prefix: str = CLASS_DICE_PREFIX) -> None:
    """Write the per-class validation Dice curves: every ``history`` key ``"val dice <class name>"``."""
    keys = [key for key in history if key.startswith(prefix) and len(key) > len(prefix)]
    if not keys:
        raise ValueError(f"plot_class_dice: no per-class Dice in the history (keys starting with {prefix!r}); "
                         f"available: {sorted(history)}")
    plot_series(history, keys, path, title="validation Dice per class", ylabel="Dice",
                labels=[key[len(prefix):] for key in keys], ylim=(0.0, 1.02))
