"""The experiment folder and the one object that writes to it, prints and emits events.

Layout of ``<root>/<dataset>/<bundle>/fold_<k>/<YYYYmmdd-HHMMSS-xxxx>/``: ``config.json`` (the
:class:`~mipcandy.training.spec.ExperimentSpec`),
``metrics.csv`` (one row per epoch), ``logs.txt``, ``progress.png`` with one PNG per loss component and
``class_dice.png``, ``checkpoint_latest.safetensors`` / ``checkpoint_best.safetensors`` (the validated weights,
with a JSON sidecar), ``training_state.safetensors`` (everything needed to resume exactly) and ``preview/`` (the
worst validation case, refreshed each validation epoch).

Every write, console line and plugin event goes through :class:`ExperimentWriter`, so a distributed run restricts
all of them to one process with ``is_main_process=False`` on the others. Plots and previews are optional
artefacts: their failure is reported as a warning and never stops training.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mipcandy.atomic import atomic_write_text
from mipcandy.console import make_console
from mipcandy.frontend.dispatch import FrontendSet
from mipcandy.hookspecs import complete_event
from mipcandy.training.spec import ExperimentSpec

METRICS = "metrics.csv"
LOGS = "logs.txt"
STATE = "training_state.safetensors"
LATEST = "checkpoint_latest.safetensors"
BEST = "checkpoint_best.safetensors"
PREVIEW = "preview"


class ArtefactWarning(RuntimeWarning):
    """An optional artefact (plot, preview) could not be written; training goes on."""


def create_experiment_folder(parent: str | Path, spec: ExperimentSpec) -> tuple[Path, ExperimentSpec]:
    """Create ``<parent>/<YYYYmmdd-HHMMSS-xxxx>`` holding ``spec`` as ``config.json``, atomically.

    The folder is assembled under a hidden temporary name and renamed into place, so an experiment folder never
    exists without its record (a run killed at that moment leaves only a hidden ``.*.creating`` folder). Returns
    the folder and the spec with its ``experiment_id`` (the folder's name).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(16):
        name = f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        folder = parent / name
        if folder.exists():
            continue
        named = replace(spec, experiment_id=name)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".creating", dir=parent))
        try:
            os.chmod(staging, 0o777 & ~_umask())
            named.write(staging)
            os.rename(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if folder.exists():
                continue
            raise
        return folder, named
    raise FileExistsError(f"could not create a new experiment folder under {parent}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def history_columns(history: Mapping[str, Sequence[Any]]) -> list[str]:
    """CSV column order: ``epoch`` first, then the rest as they first appeared."""
    return ["epoch", *(k for k in history if k != "epoch")]


def _csv_value(value: Any) -> Any:
    return "" if isinstance(value, float) and math.isnan(value) else value


def _file_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key.strip()) + ".png"


class ExperimentWriter:
    """Writes the experiment folder, the console output and the plugin events of one run."""

    def __init__(self, folder: str | Path, experiment_id: str, *, console: Console | None = None,
                 is_main_process: bool = True, events: bool = True, frontends: FrontendSet | None = None) -> None:
        self.folder = Path(folder)
        self.experiment_id = experiment_id
        self.console = console if console is not None else make_console()
        self.is_main_process = is_main_process
        self.events = events
        self.frontends = frontends if frontends is not None else FrontendSet()  # the run's --track selection

    # ---- files ------------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.folder / name

    def write_metrics(self, history: Mapping[str, Sequence[Any]]) -> None:
        """``metrics.csv`` from the column-wise history, rewritten whole (atomically) each epoch."""
        if not self.is_main_process:
            return
        columns = history_columns(history)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in zip(*(history[c] for c in columns), strict=True):
            writer.writerow([_csv_value(v) for v in row])
        atomic_write_text(self.path(METRICS), buffer.getvalue())

    def plot(self, history: Mapping[str, Sequence[float]], loss_components: Sequence[str], *,
             smoothing: float, details: bool) -> None:
        """``progress.png``; with ``details`` also one plot per loss component and ``class_dice.png``.

        Each figure costs ~0.2 s, so the trainer redraws the detail plots only every few epochs.
        """
        if not self.is_main_process:
            return
        with self._optional("plots"):
            from mipcandy.visualization.plots import CLASS_DICE_PREFIX, plot_class_dice, plot_progress, plot_series

            plot_progress(history, self.path("progress.png"), smoothing=smoothing)
            if not details:
                return
            for key in loss_components:
                plot_series(history, [key], self.path(_file_name(key)), title=key, ylabel=key)
            if any(k.startswith(CLASS_DICE_PREFIX) for k in history):
                plot_class_dice(history, self.path("class_dice.png"))

    def save_weights(self, model: Any, name: str, info: Mapping[str, Any]) -> None:
        """Model weights as safetensors plus ``<name>.json`` describing them (epoch, score, EMA or raw)."""
        if not self.is_main_process:
            return
        from mipcandy.layer import save_weights

        save_weights(model, self.path(name), metadata={"info": json.dumps(info, default=repr)})
        atomic_write_text(self.path(name).with_suffix(".json"), json.dumps(info, indent=2, default=repr) + "\n")

    def save_state(self, state: Mapping[str, Any]) -> None:
        """The full training state (see :mod:`mipcandy.training.checkpoint`), written last each epoch."""
        if self.is_main_process:
            from mipcandy.training.checkpoint import save_state

            save_state(self.path(STATE), state)

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files a killed run left behind (atomic writes never completed)."""
        if self.is_main_process:
            for path in self.folder.glob(".*.tmp*"):
                path.unlink(missing_ok=True)

    def save_preview(self, image: Any, label: Any, prediction: Any, case_id: str, epoch: int,
                     class_names: Mapping[int, str] | None = None) -> list[Path]:
        """Preview the (worst) case in ``preview/``: the core's images plus every plugin's ``preview`` hook."""
        if not self.is_main_process:
            return []
        folder = self.path(PREVIEW)
        paths: list[Path] = []
        with self._optional("the preview"):
            from mipcandy.visualization.preview import save_preview

            folder.mkdir(exist_ok=True)
            paths += save_preview(image, label, prediction, folder, case_id, class_names=class_names)
        for result in self._broadcast("preview", image=image, label=label, prediction=prediction, folder=folder,
                                      case_id=case_id):
            paths += [Path(p) for p in result]
        if paths:
            self.emit("preview_saved", experiment_id=self.experiment_id, epoch=epoch, paths=paths)
        return paths

    # ---- console and log --------------------------------------------------------------------------------------
    def log(self, message: str, *, on_screen: bool = True, style: str | None = None) -> None:
        """Append a timestamped line to ``logs.txt`` and print it."""
        if not self.is_main_process:
            return
        with open(self.path(LOGS), "a", encoding="utf-8") as handle:
            handle.write(f"[{datetime.now():%Y-%m-%d %H:%M:%S}] {message}\n")
        if on_screen:
            self.console.print(message, style=style, highlight=False, markup=False)

    def show(self, renderable: Any) -> None:
        """Print a rich renderable (a table) and append its plain-text form to ``logs.txt``."""
        if not self.is_main_process:
            return
        self.console.print(renderable)
        text = Console(file=io.StringIO(), width=120, color_system=None)
        text.print(renderable)
        with open(self.path(LOGS), "a", encoding="utf-8") as handle:
            handle.write(text.file.getvalue())

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[Any]:
        """A transient progress bar with ETA; yields ``advance()``. Silent on other processes."""
        if not self.is_main_process or total <= 0:
            yield lambda *_: None
            return
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                       console=self.console, transient=True)
        with bar:
            task = bar.add_task(description, total=total, info="")
            started = time.perf_counter()

            def advance(info: str = "") -> None:
                bar.update(task, advance=1, info=info)

            yield advance
            bar.update(task, info=f"{time.perf_counter() - started:.1f}s")

    # ---- events -----------------------------------------------------------------------------------------------
    def _broadcast(self, hook: str, **kwargs: Any) -> list[Any]:
        if not (self.is_main_process and self.events):
            return []
        from mipcandy.plugins import get_plugin_manager

        return get_plugin_manager().broadcast(hook, **kwargs)

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Broadcast an experiment event to every bundle (failures are reported by the manager, never raised) and
        queue it for the run's tracking frontends (never waits; they run even when bundle events are off)."""
        kwargs = complete_event(hook, kwargs)
        self._broadcast(hook, **kwargs)
        if self.is_main_process:
            self.frontends.emit(hook, **kwargs)

    @staticmethod
    def _optional(what: str) -> _Optional:
        return _Optional(what)


class _Optional:
    """Turns a failure into an :class:`ArtefactWarning` (optional artefacts never stop training)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, trace: Any) -> bool:
        if error is not None and isinstance(error, Exception):
            warnings.warn(f"could not write {self.what}: {type(error).__name__}: {error}", ArtefactWarning,
                          stacklevel=3)
            return True
        return False

