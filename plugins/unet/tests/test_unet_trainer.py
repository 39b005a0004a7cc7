"""UNetTrainer trains the bundle's network with deep supervision wired to its decoder outputs."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from rich.console import Console

from candy_unet import UNetTrainer
from mipcandy.common.optim import DeepSupervisionWrapper, deep_supervision_weights
from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.roi import RandomROIDataset
from mipcandy.data.synthetic import synthetic_case


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
def test_unet_trainer_trains_with_and_without_deep_supervision(data, tmp_path: Path, deep_supervision) -> None:
    trainer = UNetTrainer(tmp_path, *data, console=Console(quiet=True))
    summary = trainer.train(2, num_classes=3, iterations_per_epoch=2, seed=0, deep_supervision=deep_supervision,
                            bundle_options={"hidden_chs": (8, 16, 32, 32)}, preview=False)
    criterion, network = trainer.toolbox.criterion, trainer.toolbox.model
    assert network.deep_supervision is deep_supervision  # validation switched it off and back on
    if deep_supervision:
        assert isinstance(criterion, DeepSupervisionWrapper) and criterion.weights is None  # sized from the outputs
        assert len(network.output_strides) == 3
        assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])  # nnU-Net's 1/2^i, last at 0
        assert [s[1:] for s in trainer.sanity.output_shapes] == [(3, 32, 32), (3, 16, 16), (3, 8, 8)]
    else:
        assert not isinstance(criterion, DeepSupervisionWrapper)
    rows = list(csv.DictReader((summary.folder / "metrics.csv").open()))
    assert len(rows) == 2 and all(0 <= float(r["val score"]) <= 1 for r in rows)
