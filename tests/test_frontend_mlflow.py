"""The MLflow frontend against a real SQLite store, read back with the MLflow client and over `candy ui`'s REST API."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imsave

from mipcandy.frontend import open_frontends
from mipcandy.frontend.mlflow_frontend import embedded_tracking_uri, metric_name

mlflow = pytest.importorskip("mlflow")

CONFIG = {"dataset": "Dataset001_Demo", "num_epochs": 3,
          "options": {"lr": 0.01, "patch": [64, 64], "loss": {"name": "dice+ce"}}}
EPOCHS = [{"combined loss": 1.2, "val score": math.nan, "worst case": "", "learning rate": 0.01},
          {"combined loss": 0.9, "val score": 0.41, "val score (smoothed)": 0.41, "worst case": "case_003",
           "learning rate": 0.007},
          {"combined loss": 0.7, "val score": 0.55, "val score (smoothed)": 0.424, "worst case": "case_001",
           "learning rate": 0.004}]


def emit_run(frontends, folder: Path, *, resumed_from: int = 0, interrupted: bool = False) -> None:
    """The events of a 3-epoch run (or of its resumption after epoch ``resumed_from``) with a preview and plots."""
    frontends.emit("experiment_created", experiment_id=folder.name, folder=folder, config=CONFIG,
                   model_summary="UNet(\n  (stem): Conv2d(1, 8, 3)\n)", num_parameters=1234, num_macs=56789)
    for epoch in range(resumed_from + 1, 4):
        metrics = EPOCHS[epoch - 1]
        if epoch == 2:
            preview = folder / "preview" / "preview.png"
            imsave(preview, np.random.default_rng(0).random((8, 8, 3)))
            frontends.emit("preview_saved", experiment_id=folder.name, epoch=epoch, paths=[preview])
        if interrupted and epoch == 3:
            frontends.emit("experiment_interrupted", experiment_id=folder.name, error="KeyboardInterrupt: ")
            return
        frontends.emit("epoch_updated", experiment_id=folder.name, epoch=epoch, metrics=metrics, num_epochs=3,
                       best_score=metrics.get("val score (smoothed)"), remaining_seconds=10.0 * (3 - epoch))
    frontends.emit("experiment_completed", experiment_id=folder.name,
                   summary={"best_score": 0.424, "best_epoch": 3, "stopped_early": False, "folder": str(folder)})


def experiment_folder(root: Path, name: str) -> Path:
    folder = root / "Dataset001_Demo" / "unet" / "fold_0" / name
    (folder / "preview").mkdir(parents=True)
    imsave(folder / "progress.png", np.zeros((4, 4, 3)))
    (folder / "metrics.csv").write_text("epoch,combined loss\n1,1.2\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One root with a finished run, then resumed-and-finished and interrupted runs; the cwd stays elsewhere."""
    root, cwd = tmp_path_factory.mktemp("experiments"), tmp_path_factory.mktemp("cwd")
    saved = os.getcwd()
    os.chdir(cwd)
    environment = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME") if k in os.environ}
    try:
        with open_frontends(["mlflow"], root=root) as frontends:
            emit_run(frontends, experiment_folder(root, "20260101-120000-aaaa"))
            resumed = experiment_folder(root, "20260101-130000-bbbb")
            emit_run(frontends, resumed, interrupted=True)
            emit_run(frontends, resumed, resumed_from=2)
            emit_run(frontends, experiment_folder(root, "20260101-140000-cccc"), interrupted=True)
        assert all(s.failed == 0 for s in frontends.stats().values()), frontends.stats()
        yield root, cwd
    finally:
        os.chdir(saved)
        os.environ.update(environment)


def runs_by_name(root: Path) -> dict[str, object]:
    client = mlflow.MlflowClient(tracking_uri=embedded_tracking_uri(root))
    experiment = client.get_experiment_by_name("Dataset001_Demo/unet/fold_0")
    assert experiment is not None
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}


def test_the_store_lives_in_the_root_and_nothing_in_the_current_directory(store: tuple[Path, Path]) -> None:
    root, cwd = store
    assert (root / "mlflow.db").is_file() and (root / "mlartifacts").is_dir()
    assert list(cwd.iterdir()) == []


def test_params_metrics_and_artifacts_read_back_with_the_mlflow_client(store: tuple[Path, Path]) -> None:
    root, _ = store
    run = runs_by_name(root)["20260101-120000-aaaa"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["options.lr"] == "0.01" and params["options.patch"] == "[64, 64]"
    assert params["options.loss.name"] == "dice+ce" and params["model.parameters"] == "1234"
    assert params["model.macs"] == "56789"
    client = mlflow.MlflowClient(tracking_uri=embedded_tracking_uri(root))
    loss = client.get_metric_history(run.info.run_id, "combined loss")
    assert [(m.step, m.value) for m in sorted(loss, key=lambda m: m.step)] == [(1, 1.2), (2, 0.9), (3, 0.7)]
    score = client.get_metric_history(run.info.run_id, metric_name("val score"))
    assert [(m.step, m.value) for m in sorted(score, key=lambda m: m.step)] == [(2, 0.41), (3, 0.55)]  # no NaN
    assert "val score _smoothed_" in run.data.metrics and "worst case" not in run.data.metrics
    assert run.data.metrics["summary/best_score"] == 0.424
    artifacts = {a.path for folder in ("", "preview", "plots", "experiment")
                 for a in client.list_artifacts(run.info.run_id, folder or None)}
    assert {"model_summary.txt", "preview/preview.png", "plots/progress.png", "experiment/metrics.csv"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "model_summary.txt", str(root / "download")))
    assert "Conv2d(1, 8, 3)" in local.read_text(encoding="utf-8")


def test_a_resumed_experiment_continues_its_run_and_an_interrupted_one_is_killed(store: tuple[Path, Path]) -> None:
    root, _ = store
    runs = runs_by_name(root)
    assert sorted(runs) == ["20260101-120000-aaaa", "20260101-130000-bbbb", "20260101-140000-cccc"]
    resumed = runs["20260101-130000-bbbb"]
    assert resumed.info.status == "FINISHED"
    client = mlflow.MlflowClient(tracking_uri=embedded_tracking_uri(root))
    assert sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "combined loss")) == [1, 2, 3]
    stopped = runs["20260101-140000-cccc"]
    assert stopped.info.status == "KILLED" and stopped.data.tags["mipcandy.error"] == "KeyboardInterrupt: "


def test_metric_names_become_what_mlflow_accepts() -> None:
    from mlflow.utils.validation import _validate_metric_name

    for raw in ("val score (smoothed)", "val dice 1 (liver)", "loss: ce", "a//b", "../up", "ü-ß", "/"):
        _validate_metric_name(metric_name(raw))  # MLflow's own check raises on a name it refuses


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_candy_ui_serves_the_store_and_the_run_reads_back_over_rest(store: tuple[Path, Path]) -> None:
    root, _ = store
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mipcandy", "ui", str(root), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8")
    try:
        line = server.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, (line, server.stderr.read() if server.poll() is not None else "")
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=Dataset001_Demo/unet/fold_0",
                                    timeout=30) as response:
            experiment = json.load(response)["experiment"]
        request = urllib.request.Request(f"{base}/runs/search", method="POST", headers={
            "Content-Type": "application/json"}, data=json.dumps({
                "experiment_ids": [experiment["experiment_id"]],
                "filter": "attributes.run_name = '20260101-120000-aaaa'"}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            (run,) = json.load(response)["runs"]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert params["options.lr"] == "0.01" and metrics["combined loss"] == 0.7
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 128 + signal.SIGTERM
    with socket.socket() as probe:  # nothing listens there any more: the MLflow server went down with it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        probe.bind(("127.0.0.1", port))


def test_candy_ui_without_a_store_says_how_to_make_one(tmp_path: Path, candy_cli) -> None:
    result = candy_cli("ui", str(tmp_path))
    assert result.returncode == 1
    assert "no MLflow store in" in result.stderr and "--track mlflow" in result.stderr
