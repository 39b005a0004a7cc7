"""The data-pipeline benchmark still runs end to end (tiny sizes, no workers); timings are not checked."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "data_pipeline.py"


def test_data_pipeline_benchmark_runs_all_three_pipelines(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("monai")
    pytest.importorskip("torchio")
    spec = importlib.util.spec_from_file_location("benchmark_data_pipeline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    for name in ("ours", "TorchIO", "MONAI", "ours / faster peer"):
        assert name in out
