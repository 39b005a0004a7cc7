"""CMUNeXtTrainer trains a few steps, CMUNeXtPredictor restores the geometry, `candy train --bundle cmunext` runs."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch
from rich.console import Console

from candy_cmunext import CMUNeXtPredictor, CMUNeXtTrainer
from mipcandy.cli import train_command
from mipcandy.data import Geometry, RandomROIDataset, dataset_from_tensors, make_synthetic_dataset
from mipcandy.data.synthetic import synthetic_case

SMALL = {"variant": "CMUNeXt-S"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(40, 40), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    patches = RandomROIDataset(dataset.subset(["case0", "case1"]), 2, patch_shape=(32, 32), seed=0)
    trainer = CMUNeXtTrainer(tmp_path_factory.mktemp("cmunext"), patches, dataset.subset(["case2"]),
                             console=Console(quiet=True))
    summary = trainer.train(1, num_classes=3, iterations_per_epoch=2, seed=0, bundle_options=SMALL, preview=False)
    return trainer, summary


def test_trainer_steps_with_the_papers_optimizer(trained) -> None:
    trainer, summary = trained
    assert summary.folder.parent.name == "cmunext"
    optimizer = trainer.toolbox.optimizer
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.9
    rows = list(csv.DictReader((summary.folder / "metrics.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and 0 <= float(rows[0]["val score"]) <= 1
    assert (summary.folder / "checkpoint_latest.safetensors").is_file()


def test_predictor_keeps_the_case_geometry(trained) -> None:
    _, summary = trained
    image, _ = synthetic_case(7, shape=(37, 45), spacing=(1, 1), num_classes=3)
    geometry = Geometry.identity(2, (1.0, 1.0))
    prediction = CMUNeXtPredictor(summary.folder, checkpoint="latest").predict_case(image, geometry)
    assert prediction.labels.shape == (1, 37, 45)
    assert prediction.geometry == geometry
    assert set(prediction.labels.unique().tolist()) <= {0, 1, 2}


def test_candy_train_one_epoch(tmp_path: Path) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset011", ndim=2, num_cases=4, shape=(32, 32), num_classes=2,
                                 progress=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args(["--bundle", "cmunext", "--dataset", str(raw), "--output", str(tmp_path / "out"),
                              "--epochs", "1", "--iterations", "1", "--folds", "2", "--device", "cpu", "--seed", "0",
                              "--bundle-option", "variant=CMUNeXt-S"])
    assert train_command.run(args) == 0
    (experiment,) = (tmp_path / "out").glob("*/cmunext/fold_0/2*")
    assert (experiment / "checkpoint_latest.safetensors").is_file()
