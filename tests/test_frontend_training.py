"""``candy train --track mlflow`` end to end: the store stays inside the experiment root, the MLflow client reads the
run's params and per-epoch metrics back, and a resumed run continues the same MLflow run."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mipcandy.data.synthetic import make_synthetic_dataset
from mipcandy.frontend.mlflow_frontend import embedded_tracking_uri
from mipcandy.training.spec import read_experiment_spec

mlflow = pytest.importorskip("mlflow")


def candy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``candy ARGS`` in a fresh interpreter run from ``cwd``, with no MLflow or plugin settings of the caller."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CANDY_", "MLFLOW_"))}
    return subprocess.run([sys.executable, "-m", "mipcandy", *args], capture_output=True, encoding="utf-8",
                          env=environment, cwd=cwd, timeout=600)


def test_candy_train_track_mlflow_keeps_the_store_in_the_root(tmp_path: Path) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset001", ndim=2, num_cases=5, shape=(32, 32), num_classes=2,
                                 progress=False)
    cwd, root = tmp_path / "cwd", tmp_path / "experiments"
    cwd.mkdir()
    trained = candy("train", "--dataset", str(raw), "--output", str(root), "--epochs", "2", "--iterations", "2",
                    "--device", "cpu", "--seed", "0", "--track", "mlflow", cwd=cwd)
    assert trained.returncode == 0, trained.stderr
    folder = Path(trained.stdout.strip().splitlines()[-1])
    resumed = candy("train", "--resume", str(folder), "--epochs", "3", "--track", "mlflow", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr
    assert list(cwd.iterdir()) == []
    assert (root / "mlflow.db").is_file() and (root / "mlartifacts").is_dir()

    client = mlflow.MlflowClient(tracking_uri=embedded_tracking_uri(root))
    experiment = client.get_experiment_by_name("Dataset001/unet/fold_0")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == folder.name and run.info.status == "FINISHED"
    spec = read_experiment_spec(folder)
    assert run.data.params["options.bundle"] == spec.options.bundle == "unet"
    assert int(run.data.params["model.parameters"]) > 0
    with open(folder / "metrics.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    history = sorted(client.get_metric_history(run.info.run_id, "combined loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([float(r["combined loss"]) for r in rows])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/progress.png" in artifacts
