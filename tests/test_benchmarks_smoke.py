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


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch):
    """A benchmark script as a module (registered, so that its dataclasses can look their module up)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", SCRIPT.parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_networks_benchmark_checks_counts_and_times_every_pair(capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("monai")
    module = load_benchmark("networks", monkeypatch)
    assert module.main(["--quick"]) == 0  # counts agree with the peers and the published numbers
    out = capsys.readouterr().out
    assert "published" in out and "ours/peer" in out
    peers = {"candy_vnet": "MONAI VNet", "candy_unetr": "MONAI UNETR", "candy_unetpp": "MONAI BasicUNetPlusPlus",
             "candy_mednext": "MONAI MedNeXt"}
    for bundle, peer in peers.items():
        assert (peer in out) == (importlib.util.find_spec(bundle) is not None)


def test_predict_case_benchmark_agrees_with_nnunet(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nnunetv2")
    pytest.importorskip("candy_unet")
    module = load_benchmark("predict_case", monkeypatch)
    assert module.main(["--quick"]) == 0  # Dice against nnU-Net's labels, and the end-to-end run's labels
    out = capsys.readouterr().out
    for name in ("Dice ours vs nnU-Net", "outside the network", "labels equal the staged run: True"):
        assert name in out
