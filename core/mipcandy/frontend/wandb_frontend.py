"""Weights & Biases tracking: one W&B run per experiment folder, logged incrementally.

``WANDB_MODE`` (``offline`` records locally for a later ``wandb sync``), ``WANDB_PROJECT`` (default ``mipcandy``),
``WANDB_ENTITY`` and ``WANDB_DIR`` (default: the run's root, not the current directory) are honoured. The run is
named after the experiment, grouped by its place under the root (``Dataset001/unet/fold_0``) and carries the config,
the parameter and MAC counts. Each epoch logs that epoch's values only, with ``step=epoch``; previews are logged as
``wandb.Image``; an interrupted run finishes with exit code 1, which W&B shows as failed. A resumed experiment
continues its W&B run (the run id is the experiment id). wandb is imported only when an event arrives.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipcandy.frontend.protocol import require_module, unknown_experiment
from mipcandy.frontend.values import experiment_group, finite_metrics
from mipcandy.hookspecs import hookimpl

DEFAULT_PROJECT = "mipcandy"


@dataclass
class _Run:
    """What starting an experiment's W&B run needs, and the run once started."""

    folder: Path
    root: Path
    config: dict[str, Any]
    run: Any = None


class WandBFrontend:
    """The ``wandb`` frontend (see the module's docstring)."""

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}

    @hookimpl
    def tracking_opened(self, root: Path) -> None:
        require_module("wandb", "wandb", "Weights & Biases")

    @hookimpl
    def experiment_created(self, experiment_id: str, folder: Path, config: Mapping[str, Any], root: Path | None,
                           num_parameters: int | None, num_macs: int | None) -> None:
        folder = Path(folder)
        model = {key: value for key, value in (("parameters", num_parameters), ("macs", num_macs))
                 if value is not None}
        self.runs[experiment_id] = _Run(folder, Path(root) if root is not None else folder.parent,
                                        {**config, **({"model": model} if model else {})})
        self._open(experiment_id)

    def _open(self, experiment_id: str) -> Any:
        """The experiment's W&B run, started on first use (a failed start is retried at the next event)."""
        state = self.runs.get(experiment_id)
        if state is None:
            raise unknown_experiment("W&B", experiment_id)
        if state.run is None:
            import wandb

            directory = Path(os.environ.get("WANDB_DIR") or state.root)
            directory.mkdir(parents=True, exist_ok=True)
            # the variables are read here, at each run, since wandb keeps the settings of its first setup
            state.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
                                   entity=os.environ.get("WANDB_ENTITY") or None,
                                   mode=os.environ.get("WANDB_MODE") or None, name=experiment_id, id=experiment_id,
                                   resume="allow", dir=directory, group=experiment_group(state.folder, state.root),
                                   config=state.config, reinit="create_new")
        return state.run

    @hookimpl
    def epoch_updated(self, experiment_id: str, epoch: int, metrics: Mapping[str, float],
                      best_score: float | None) -> None:
        values = finite_metrics({**metrics, "best score": best_score})
        if values:
            self._open(experiment_id).log(values, step=epoch)

    @hookimpl
    def preview_saved(self, experiment_id: str, epoch: int, paths: Sequence[Path]) -> None:
        import wandb

        images = {f"preview/{Path(path).stem}": wandb.Image(str(path)) for path in paths if Path(path).is_file()}
        if images:
            self._open(experiment_id).log(images, step=epoch)

    @hookimpl
    def experiment_completed(self, experiment_id: str, summary: Mapping[str, Any]) -> None:
        run = self._open(experiment_id)
        run.summary.update(finite_metrics(summary))
        run.finish(exit_code=0)
        del self.runs[experiment_id]

    @hookimpl
    def experiment_interrupted(self, experiment_id: str, error: str) -> None:
        run = self._open(experiment_id)
        run.summary["error"] = error
        run.finish(exit_code=1)
        del self.runs[experiment_id]


plugin = WandBFrontend()
