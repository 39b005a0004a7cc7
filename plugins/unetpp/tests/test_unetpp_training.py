"""UNet++ trained through its trainer binding and `candy train`, then predicted through its predictor binding."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch
from rich.console import Console

from candy_unetpp.bindings import UNetPPPredictor, UNetPPTrainer
from mipcandy.cli import train_command
from mipcandy.data import Geometry, RandomROIDataset, dataset_from_tensors
from mipcandy.data.synthetic import make_synthetic_dataset, synthetic_case

OPTIONS = {"features": [4, 8, 16]}


@pytest.fixture(scope="module")
def data():
    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(36, 40), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    return dataset.subset(["case0", "case1"]), dataset.subset(["case2"])


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_trainer_binding_trains_and_the_predictor_restores_the_geometry(data, tmp_path: Path,
                                                                        deep_supervision: bool) -> None:
    train, val = data
    trainer = UNetPPTrainer(tmp_path, RandomROIDataset(train, 2, patch_shape=(32, 32), seed=0), val,
                            console=Console(quiet=True))
    summary = trainer.train(1, num_classes=3, iterations_per_epoch=1, seed=0, deep_supervision=deep_supervision,
                            bundle_options=OPTIONS, preview=False)
    assert isinstance(trainer.toolbox.optimizer, torch.optim.SGD)  # UNet++ keeps the core's nnU-Net recipe
    if deep_supervision:  # three nested heads, all at the patch's full resolution
        assert [tuple(s[1:]) for s in trainer.sanity.output_shapes] == [(3, 32, 32)] * 2
    rows = list(csv.DictReader((summary.folder / "metrics.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and 0 <= float(rows[0]["val score"]) <= 1
    image, _ = synthetic_case(7, shape=(27, 45), spacing=(0.8, 1.2), num_classes=3)
    geometry = Geometry.identity(2, (0.8, 1.2))
    prediction = UNetPPPredictor(summary.folder, checkpoint="latest").predict_case(image, geometry)
    assert prediction.labels.shape == (1, 27, 45) and prediction.geometry == geometry
    assert set(prediction.labels.unique().tolist()) <= {0, 1, 2}


def test_candy_train_runs_the_bundle_for_one_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset011", ndim=2, num_cases=4, shape=(32, 32), num_classes=3,
                                 progress=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args(["--bundle", "unetpp", "--dataset", str(raw), "--output", str(tmp_path / "out"),
                              "--epochs", "1", "--iterations", "1", "--folds", "2", "--device", "cpu", "--seed", "0",
                              "--bundle-option", "features=[4, 8, 16]"])
    assert train_command.run(args) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (folder / "metrics.csv").is_file() and (folder / "config.json").is_file()
