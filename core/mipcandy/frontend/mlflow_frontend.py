"""MLflow tracking, embedded by default: a SQLite database and an artifact folder inside the run's root.

Without ``MLFLOW_TRACKING_URI`` every run of a root is recorded in ``<root>/mlflow.db`` with its artifacts under
``<root>/mlartifacts/`` (nothing is written to the current directory), and ``candy ui ROOT`` shows them in the
MLflow web UI. With ``MLFLOW_TRACKING_URI`` set (a server, Databricks...), runs go there instead. One MLflow run per
experiment folder, in the MLflow experiment named after the folder's place under the root
(``Dataset001/unet/fold_0``) unless ``MLFLOW_EXPERIMENT_NAME`` is set. It records:

* params: the experiment config flattened to dotted keys, the parameter and MAC counts; the model summary as a text
  artifact;
* metrics: each epoch's values with ``step=epoch`` (names sanitized to what MLflow accepts), the best score so far,
  and the summary's numbers at the end;
* artifacts: the latest previews, and at the end the plots, ``metrics.csv``, ``config.json`` and ``logs.txt``; the
  best checkpoint too when ``CANDY_MLFLOW_CHECKPOINT=1``.

A resumed experiment (``experiment_created`` again) continues its MLflow run. This module imports MLflow only when
an event arrives, on the frontend's worker thread.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipcandy.frontend.protocol import require_module, unknown_experiment
from mipcandy.frontend.values import experiment_group, finite_metrics, flatten
from mipcandy.hookspecs import hookimpl

STORE = "mlflow.db"
ARTIFACTS = "mlartifacts"
CHECKPOINT_ENV = "CANDY_MLFLOW_CHECKPOINT"
EXPERIMENT_TAG = "mipcandy.experiment_id"
FOLDER_TAG = "mipcandy.folder"
RECORDS = ("metrics.csv", "config.json", "logs.txt")
PARAM_LENGTH = 500  # MLflow's smallest limit across versions; the whole config is logged as config.json anyway
KEY_LENGTH = 250
BATCH = 100  # MLflow's limit of params per log_batch
_TRUE = ("1", "true", "yes", "on")


def embedded_tracking_uri(root: str | Path) -> str:
    """The SQLite store of ``root``: ``sqlite:///<root>/mlflow.db``."""
    return "sqlite:///" + (Path(root).resolve() / STORE).as_posix()


def embedded_artifact_location(root: str | Path) -> str:
    """Where runs of ``root`` keep their artifacts: ``<root>/mlartifacts`` as a ``file://`` URI."""
    return (Path(root).resolve() / ARTIFACTS).as_uri()


def metric_name(key: str) -> str:
    """``key`` as MLflow accepts it: only letters, digits, ``_ - . /`` and spaces, no empty or ``..`` parts.

    ``"val score (smoothed)"`` becomes ``"val score _smoothed_"``.
    """
    name = re.sub(r"[^\w\-. /]", "_", key.strip())
    parts = [part for part in name.split("/") if part.strip(". ")]
    return "/".join(parts)[:KEY_LENGTH] or "_"


def _true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


@dataclass
class _Run:
    """One experiment's MLflow run: what opening it needs, and its id once opened."""

    folder: Path
    root: Path
    params: dict[str, str]
    model_summary: str | None
    run_id: str | None = None
    client: Any = None
    names: dict[str, str] = field(default_factory=dict)  # our metric name -> MLflow's

    def metric(self, key: str) -> str:
        """The MLflow name of metric ``key``; two keys that sanitize alike get distinct names."""
        if key not in self.names:
            name, taken = metric_name(key), set(self.names.values())
            suffix = 2
            while name in taken:
                name, suffix = f"{metric_name(key)}_{suffix}", suffix + 1
            self.names[key] = name
        return self.names[key]


class MLflowFrontend:
    """The ``mlflow`` frontend (see the module's docstring)."""

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}

    @hookimpl
    def tracking_opened(self, root: Path) -> None:
        require_module("mlflow", "mlflow", "MLflow")

    @hookimpl
    def experiment_created(self, experiment_id: str, folder: Path, config: Mapping[str, Any], root: Path | None,
                           model_summary: str | None, num_parameters: int | None, num_macs: int | None) -> None:
        params = flatten(config)
        params.update({key: str(value) for key, value in (("model.parameters", num_parameters),
                                                           ("model.macs", num_macs)) if value is not None})
        folder = Path(folder)
        self.runs[experiment_id] = _Run(folder, Path(root) if root is not None else folder.parent, params,
                                        model_summary)
        self._open(experiment_id)

    def _open(self, experiment_id: str) -> _Run:
        """The experiment's run, started (or found again) on first use; a failed start is retried next time."""
        run = self.runs.get(experiment_id)
        if run is None:
            raise unknown_experiment("MLflow", experiment_id)
        if run.run_id is None:
            from mlflow import MlflowClient

            client = MlflowClient() if os.environ.get("MLFLOW_TRACKING_URI") else \
                MlflowClient(tracking_uri=embedded_tracking_uri(run.root))
            experiment = _experiment(client, run)
            run_id = _existing_run(client, experiment, experiment_id) or client.create_run(
                experiment, run_name=experiment_id, tags={EXPERIMENT_TAG: experiment_id,
                                                          FOLDER_TAG: str(run.folder)}).info.run_id
            _log_params(client, run_id, run.params)
            if run.model_summary:
                client.log_text(run_id, run.model_summary, "model_summary.txt")
            run.client, run.run_id = client, run_id
        return run

    @hookimpl
    def epoch_updated(self, experiment_id: str, epoch: int, metrics: Mapping[str, float],
                      best_score: float | None) -> None:
        from mlflow.entities import Metric

        run = self._open(experiment_id)
        values = finite_metrics({**metrics, "best score": best_score})
        now = int(time.time() * 1000)
        entries = [Metric(run.metric(key), value, now, epoch) for key, value in values.items()]
        if entries:
            run.client.log_batch(run.run_id, metrics=entries)

    @hookimpl
    def preview_saved(self, experiment_id: str, paths: Sequence[Path]) -> None:
        run = self._open(experiment_id)
        _log_files(run, (Path(path) for path in paths), "preview")

    @hookimpl
    def experiment_completed(self, experiment_id: str, summary: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        run = self._open(experiment_id)
        now = int(time.time() * 1000)
        final = [Metric(run.metric(f"summary/{key}"), value, now, 0) for key, value in finite_metrics(summary).items()]
        if final:
            run.client.log_batch(run.run_id, metrics=final)
        self._close(experiment_id, "FINISHED")

    @hookimpl
    def experiment_interrupted(self, experiment_id: str, error: str) -> None:
        run = self._open(experiment_id)
        run.client.set_tag(run.run_id, "mipcandy.error", error[:PARAM_LENGTH])
        self._close(experiment_id, "KILLED" if error.startswith("KeyboardInterrupt") else "FAILED")

    def _close(self, experiment_id: str, status: str) -> None:
        """Record the experiment folder's plots and files, optionally the best checkpoint, and end the run."""
        run = self.runs[experiment_id]
        _log_files(run, sorted(run.folder.glob("*.png")), "plots")
        _log_files(run, (run.folder / name for name in RECORDS), "experiment")
        if _true(CHECKPOINT_ENV):
            from mipcandy.training.experiment import BEST

            best = run.folder / BEST
            _log_files(run, (best, best.with_suffix(".json")), "checkpoint")
        run.client.set_terminated(run.run_id, status)
        del self.runs[experiment_id]


def _experiment(client: Any, run: _Run) -> str:
    """The id of the MLflow experiment of ``run``, created (with its artifacts beside the store) if new."""
    from mlflow.exceptions import MlflowException

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment_group(run.folder, run.root)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else embedded_artifact_location(run.root)
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it in between
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _existing_run(client: Any, experiment: str, experiment_id: str) -> str | None:
    """The run of an experiment seen before (a resumed one), reopened; ``None`` for a new experiment."""
    if not re.fullmatch(r"[\w\-.]+", experiment_id):
        return None
    runs = client.search_runs([experiment], filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment_id}'",
                              max_results=1)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    client.update_run(run_id, status="RUNNING")
    return run_id


def _log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Log the params the run does not have yet (MLflow params never change; a resumed run keeps its own)."""
    from mlflow.entities import Param

    present = client.get_run(run_id).data.params
    entries = [Param(key[:KEY_LENGTH], value[:PARAM_LENGTH]) for key, value in
               {metric_name(k): v for k, v in params.items()}.items() if key[:KEY_LENGTH] not in present]
    for start in range(0, len(entries), BATCH):
        client.log_batch(run_id, params=entries[start:start + BATCH])


def _log_files(run: _Run, paths: Iterable[Path], artifact_path: str) -> None:
    """Copy the files that exist into the run's artifacts (a missing plot is not an error)."""
    for path in paths:
        if path.is_file():
            run.client.log_artifact(run.run_id, str(path), artifact_path)


plugin = MLflowFrontend()
