"""The frontend part of the trainer-overhead benchmark still runs end to end (three events); times are not checked."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "trainer_overhead.py"


def test_the_frontend_overhead_benchmark_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    pytest.importorskip("candy_unet")
    for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        monkeypatch.setenv(f"WANDB_{name}", str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("benchmark_trainer_overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SLEEP_SECONDS", 60.0)  # still asleep whenever the others finish
    with pytest.warns(Warning, match="'sleeper' is still busy"):
        assert module.main(["--frontends-only", "--frontend-events", "3"]) == 0
    out = capsys.readouterr().out
    assert "ExperimentWriter.emit over 5 events" in out and "failures: 0" in out
    assert "MLflow (SQLite) logging per epoch" in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
