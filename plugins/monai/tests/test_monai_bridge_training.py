"""MONAITrainer trains a MONAI network with the core recipe, MONAIPredictor restores the geometry, `candy train`."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch
from monai.networks import nets
from rich.console import Console

from candy_monai import MONAIPredictor, MONAITrainer
from candy_monai.bridge import build_monai_network
from mipcandy.cli import train_command
from mipcandy.data import Geometry, RandomROIDataset, dataset_from_tensors, make_synthetic_dataset
from mipcandy.data.synthetic import synthetic_case

SEGRESNET = {"network": "SegResNet", "init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(40, 40), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    patches = RandomROIDataset(dataset.subset(["case0", "case1"]), 2, patch_shape=(32, 32), seed=0)
    trainer = MONAITrainer(tmp_path_factory.mktemp("monai"), patches, dataset.subset(["case2"]),
                           console=Console(quiet=True))
    summary = trainer.train(1, num_classes=3, iterations_per_epoch=2, seed=0, bundle_options=SEGRESNET,
                            preview=False)
    return trainer, summary


def test_trainer_steps_a_monai_network_with_the_core_recipe(trained) -> None:
    trainer, summary = trained
    assert summary.folder.parent.name == "monai"
    assert isinstance(trainer.toolbox.model, nets.SegResNet)
    group = trainer.toolbox.optimizer.param_groups[0]  # nnU-Net's SGD, the core default
    assert isinstance(trainer.toolbox.optimizer, torch.optim.SGD) and group["momentum"] == 0.99 and group["nesterov"]
    rows = list(csv.DictReader((summary.folder / "metrics.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and 0 <= float(rows[0]["val score"]) <= 1
    config = json.loads((summary.folder / "config.json").read_text(encoding="utf-8"))
    assert config["options"]["bundle_options"] == SEGRESNET  # what the predictor rebuilds the network from


def test_predictor_keeps_the_case_geometry(trained) -> None:
    _, summary = trained
    image, _ = synthetic_case(7, shape=(37, 45), spacing=(1, 1), num_classes=3)
    geometry = Geometry.identity(2, (1.0, 1.0))
    prediction = MONAIPredictor(summary.folder, checkpoint="latest").predict_case(image, geometry)
    assert prediction.labels.shape == (1, 37, 45)
    assert prediction.geometry == geometry
    assert set(prediction.labels.unique().tolist()) <= {0, 1, 2}


def test_candy_train_one_epoch(tmp_path: Path) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset012", ndim=2, num_cases=4, shape=(32, 32), num_classes=2,
                                 progress=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args(["--bundle", "monai", "--dataset", str(raw), "--output", str(tmp_path / "out"),
                              "--epochs", "1", "--iterations", "1", "--folds", "2", "--device", "cpu", "--seed", "0",
                              "--bundle-option", "network=BasicUNetPlusPlus", "--bundle-option",
                              "features=[4,4,8,8,16,4]"])
    assert train_command.run(args) == 0
    (experiment,) = (tmp_path / "out").glob("*/monai/fold_0/2*")
    assert (experiment / "checkpoint_latest.safetensors").is_file()


def test_dynunet_checkpoints_round_trip(tmp_path: Path) -> None:
    from mipcandy.layer import load_weights, save_weights

    options = {"network": "DynUNet", "filters": [4, 8, 8, 16]}
    trained, fresh = (build_monai_network((1, 32, 32), 2, options) for _ in range(2))
    save_weights(trained, tmp_path / "dynunet.safetensors")
    load_weights(fresh, tmp_path / "dynunet.safetensors")
    for a, b in zip(trained.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_candy_train_names_the_networks_when_none_is_chosen(tmp_path: Path, capsys) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset013", ndim=2, num_cases=4, shape=(32, 32), num_classes=2,
                                 progress=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args(["--bundle", "monai", "--dataset", str(raw), "--output", str(tmp_path / "out"),
                              "--epochs", "1", "--iterations", "1", "--folds", "2", "--device", "cpu"])
    assert train_command.run(args) == 2
    assert "no network option; choose one with network=NAME" in capsys.readouterr().err
