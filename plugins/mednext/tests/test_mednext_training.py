"""MedNeXtTrainer (with and without deep supervision), MedNeXtPredictor, and `candy train --bundle mednext` with
the recipe's AdamW."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch
from rich.console import Console

from candy_mednext.bindings import MedNeXtPredictor, MedNeXtTrainer
from mipcandy.cli import train_command
from mipcandy.common.optim import DeepSupervisionWrapper
from mipcandy.data import Geometry, RandomROIDataset, dataset_from_tensors, make_synthetic_dataset
from mipcandy.data.synthetic import synthetic_case
from mipcandy.training.checkpoint import load_state

TINY = {"base_ch": 4, "exp_r": 2, "block_counts": 1}


def metrics(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def data():
    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(40, 40), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    return RandomROIDataset(dataset.subset(["case0", "case1"]), 2, patch_shape=(32, 32), seed=0), \
        dataset.subset(["case2"])


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_trainer_trains_with_the_recipes_optimizer(data, tmp_path: Path, deep_supervision) -> None:
    trainer = MedNeXtTrainer(tmp_path, *data, console=Console(quiet=True))
    summary = trainer.train(1, num_classes=3, iterations_per_epoch=2, seed=0, preview=False,
                            deep_supervision=deep_supervision, bundle_options=TINY)
    optimizer = trainer.toolbox.optimizer
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["eps"] == 1e-4
    (row,) = metrics(summary.folder)
    assert float(row["learning rate"]) == pytest.approx(1e-3) and 0 <= float(row["val score"]) <= 1
    shapes = [shape[1:] for shape in trainer.sanity.output_shapes]
    if deep_supervision:
        assert isinstance(trainer.toolbox.criterion, DeepSupervisionWrapper)
        assert shapes == [(3, 32 // 2 ** i, 32 // 2 ** i) for i in range(5)]
    else:
        assert shapes == [(3, 32, 32)]

    image = torch.randn(1, 37, 45)  # not a multiple of the patch: sliding windows cover it
    geometry = Geometry.identity(2, (0.8, 1.2))
    prediction = MedNeXtPredictor(summary.folder, checkpoint="latest").predict_case(image, geometry)
    assert prediction.labels.shape == (1, 37, 45) and prediction.geometry == geometry
    assert set(prediction.labels.unique().tolist()) <= {0, 1, 2}


def test_candy_train_uses_the_bundles_adamw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset012", ndim=2, num_cases=4, shape=(32, 32), num_classes=3,
                                 progress=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args(["--bundle", "mednext", "--dataset", str(raw), "--output", str(tmp_path / "out"),
                              "--epochs", "1", "--iterations", "1", "--folds", "2", "--device", "cpu", "--seed", "0",
                              "--bundle-option", "base_ch=4", "--bundle-option", "block_counts=1"])
    assert train_command.run(args) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    state = load_state(folder / "training_state.safetensors")
    (group,) = state["optimizer"]["param_groups"]
    # AdamW (decoupled weight decay) with the recipe's eps and weight decay; the schedule started from lr 1e-3
    assert group["decoupled_weight_decay"] is True and (group["eps"], group["weight_decay"]) == (1e-4, 3e-5)
    assert all({"exp_avg", "exp_avg_sq"} <= set(s) for s in state["optimizer"]["state"].values())
    assert state["scheduler"]["initial_lr"] == 1e-3 and float(metrics(folder)[0]["learning rate"]) == 1e-3
