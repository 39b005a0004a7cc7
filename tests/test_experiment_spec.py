"""`config.json` round-trips through ExperimentSpec, holds no object reprs, and is read through one reader that names
what is wrong with a foreign or damaged file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from torch import nn

from mipcandy.data import NNUNetDataset, RandomROIDataset, make_synthetic_dataset, preprocess_dataset
from mipcandy.data.augment.pipeline import NNUNetAugmentation
from mipcandy.presets import SegmentationTrainer
from mipcandy.training import DataRecord, ExperimentSpecError, TrainingOptions, read_experiment_spec
from mipcandy.training.spec import ExperimentSpec


class Small(SegmentationTrainer):
    default_options = TrainingOptions(iterations_per_epoch=1, preview=False, plot_every=100)

    def build_network(self, example_shape):
        return nn.Conv2d(example_shape[0], self.options.num_classes, 3, padding=1)


@pytest.fixture(scope="module")
def spec_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spec")
    raw = make_synthetic_dataset(root / "Dataset012_Spec", ndim=2, num_cases=4, shape=(32, 32), num_classes=3,
                                 progress=False)
    data = preprocess_dataset(NNUNetDataset(raw), root / "cache", progress=False)
    train, val = data.fold(1, num_folds=2)
    patches = RandomROIDataset(train, 2, patch_shape=(16, 16), seed=4)
    patches.augmentation = NNUNetAugmentation.for_patch_size(patches.patch_shape)
    record = DataRecord(dataset=str(raw), fold=1, num_folds=2)
    trainer = Small(root / "runs", patches, val, console=Console(quiet=True), data_record=record)
    return trainer.train(1, seed=9, ema=True, bundle_options={}).folder


def test_config_json_round_trips(spec_folder: Path) -> None:
    text = (spec_folder / "config.json").read_text(encoding="utf-8")
    spec = read_experiment_spec(spec_folder)
    assert ExperimentSpec.from_json(json.loads(text)) == spec
    assert spec.to_json() == json.loads(text)
    assert " object at 0x" not in text  # no reprs


def test_the_record_holds_what_resume_and_predict_need(spec_folder: Path) -> None:
    spec = read_experiment_spec(spec_folder)
    assert spec.experiment_id == spec_folder.name and spec.num_epochs == 1
    assert spec.options.seed == 9 and spec.options.ema and spec.options.num_classes == 3
    assert spec.example_shape == (1, 16, 16) and spec.patch_size == (16, 16)
    assert spec.class_names == {i: name for name, i in NNUNetDataset(spec.data.dataset).labels.items()}
    assert len(spec.class_names) == 3
    assert spec.data.fold == 1 and spec.data.num_folds == 2 and spec.data.cache.endswith("cache")
    assert len(spec.data.train_cases) + len(spec.data.val_cases) == 4
    assert not set(spec.data.train_cases) & set(spec.data.val_cases)
    assert spec.sampling["batch_size"] == 2 and spec.sampling["seed"] == 4
    augmentation = spec.sampling["augmentation"]
    assert augmentation["transform"] == "NNUNetAugmentation"
    assert NNUNetAugmentation(**augmentation["settings"]).settings == augmentation["settings"]
    assert spec.preprocessing_plan is not None
    assert spec_folder.parent.name == "fold_1" and spec_folder.parent.parent.name == "Small"


def test_bundle_options_that_json_cannot_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="bundle_options must hold JSON values only"):
        TrainingOptions(bundle_options={"norm": nn.BatchNorm2d})


@pytest.mark.parametrize(("content", "message"), [
    ("{", "is not valid JSON"),
    ("[]", "must hold a JSON object"),
    ('{"options": {}}', "is not a mipcandy.experiment version 1 record"),
    ('{"format": "mipcandy.experiment", "version": 1}', "is damaged"),
])
def test_foreign_or_damaged_records_are_named(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "config.json").write_text(content, encoding="utf-8")
    with pytest.raises(ExperimentSpecError, match=message) as caught:
        read_experiment_spec(tmp_path)
    assert "config.json" in str(caught.value)
