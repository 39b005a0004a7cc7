"""VNetTrainer and VNetPredictor on tiny synthetic volumes; `candy train --bundle vnet` with the paper's loss."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch
from rich.console import Console

from candy_vnet.bindings import VNetPredictor, VNetTrainer
from mipcandy.cli import train_command
from mipcandy.data import Geometry, RandomROIDataset, dataset_from_tensors, make_synthetic_dataset
from mipcandy.data.synthetic import synthetic_case

TINY = {"base_ch": 4, "down_convs": [1, 1, 1, 1], "up_convs": [1, 1, 1, 1]}


def metrics(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def data():
    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(20, 20, 20), spacing=(1, 1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(3, (1.0, 1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    return RandomROIDataset(dataset.subset(["case0", "case1"]), 2, patch_shape=(16, 16, 16), seed=0), \
        dataset.subset(["case2"])


def test_trainer_steps_on_the_dice_loss_and_the_predictor_restores_the_geometry(data, tmp_path: Path) -> None:
    trainer = VNetTrainer(tmp_path, *data, console=Console(quiet=True))
    summary = trainer.train(1, num_classes=3, iterations_per_epoch=1, seed=0, preview=False,
                            bundle_options={**TINY, "loss": "dice"})
    (row,) = metrics(summary.folder)
    assert 0 <= float(row["dice loss"]) <= 1 and float(row["dice loss"]) == pytest.approx(float(row["combined loss"]))
    assert "ce loss" not in row and 0 <= float(row["val score"]) <= 1

    image = torch.randn(1, 19, 21, 17)  # not a multiple of the patch: sliding windows cover it
    geometry = Geometry.identity(3, (1.5, 1.0, 1.0))
    prediction = VNetPredictor(summary.folder, checkpoint="latest").predict_case(image, geometry)
    assert prediction.labels.shape == (1, 19, 21, 17) and prediction.geometry == geometry
    assert set(prediction.labels.unique().tolist()) <= {0, 1, 2}


def test_trainer_uses_the_core_criterion_by_default(data, tmp_path: Path) -> None:
    summary = VNetTrainer(tmp_path, *data, console=Console(quiet=True)).train(
        1, num_classes=3, iterations_per_epoch=1, seed=0, preview=False, bundle_options=TINY)
    (row,) = metrics(summary.folder)
    assert "ce loss" in row and "dice loss" not in row


def test_candy_train_uses_the_bundles_dice_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset011", ndim=3, num_cases=4, shape=(24, 24, 24), num_classes=2,
                                 spacing=(1, 1, 1), progress=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args(["--bundle", "vnet", "--dataset", str(raw), "--output", str(tmp_path / "out"),
                              "--epochs", "1", "--iterations", "1", "--folds", "2", "--device", "cpu", "--seed", "0",
                              "--bundle-option", 'loss="dice"', "--bundle-option", "base_ch=4",
                              "--bundle-option", "down_convs=[1,1,1,1]", "--bundle-option", "up_convs=[1,1,1,1]"])
    assert train_command.run(args) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = metrics(folder)
    assert float(row["dice loss"]) == pytest.approx(float(row["combined loss"])) and "ce loss" not in row
