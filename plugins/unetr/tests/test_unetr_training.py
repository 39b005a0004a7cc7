"""UNETR trained through its trainer binding and `candy train` with the paper's AdamW, then predicted."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch
from rich.console import Console

from candy_unetr.bindings import UNETRPredictor, UNETRTrainer
from mipcandy.cli import train_command
from mipcandy.data import Geometry, RandomROIDataset, dataset_from_tensors
from mipcandy.data.synthetic import make_synthetic_dataset, synthetic_case

OPTIONS = {"hidden_size": 16, "mlp_dim": 32, "num_heads": 2, "num_layers": 4, "feature_size": 4}


def test_trainer_binding_trains_and_the_predictor_restores_the_geometry(tmp_path: Path) -> None:
    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(36, 40), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    trainer = UNETRTrainer(tmp_path, RandomROIDataset(dataset.subset(["case0", "case1"]), 2, patch_shape=(32, 32),
                                                      seed=0), dataset.subset(["case2"]), console=Console(quiet=True))
    summary = trainer.train(1, num_classes=3, iterations_per_epoch=1, seed=0, bundle_options=OPTIONS, preview=False)
    optimizer = trainer.toolbox.optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-5
    rows = list(csv.DictReader((summary.folder / "metrics.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and 0 <= float(rows[0]["val score"]) <= 1
    image, _ = synthetic_case(7, shape=(27, 45), spacing=(0.8, 1.2), num_classes=3)
    geometry = Geometry.identity(2, (0.8, 1.2))
    prediction = UNETRPredictor(summary.folder, checkpoint="latest").predict_case(image, geometry)
    assert prediction.labels.shape == (1, 27, 45) and prediction.geometry == geometry
    assert set(prediction.labels.unique().tolist()) <= {0, 1, 2}


def test_candy_train_steps_the_papers_adamw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    built: list[torch.optim.Optimizer] = []

    def recording(kind: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
        class Recording(kind):  # type: ignore[valid-type, misc]
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                built.append(self)
        return Recording

    monkeypatch.setattr(torch.optim, "AdamW", recording(torch.optim.AdamW))
    monkeypatch.setattr(torch.optim, "SGD", recording(torch.optim.SGD))
    raw = make_synthetic_dataset(tmp_path / "Dataset012", ndim=2, num_cases=4, shape=(32, 32), num_classes=3,
                                 progress=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args(["--bundle", "unetr", "--dataset", str(raw), "--output", str(tmp_path / "out"),
                              "--epochs", "1", "--iterations", "1", "--folds", "2", "--device", "cpu", "--seed", "0",
                              *(f"--bundle-option={key}={value}" for key, value in OPTIONS.items())])
    assert train_command.run(args) == 0
    assert (Path(capsys.readouterr().out.strip().splitlines()[-1]) / "metrics.csv").is_file()
    (optimizer,) = built  # one optimizer, and not the core's SGD
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"], group["betas"]) == (1e-4, 1e-5, (0.9, 0.999))
    assert all(int(state["step"]) == 1 for state in optimizer.state.values())  # it took the run's one step
