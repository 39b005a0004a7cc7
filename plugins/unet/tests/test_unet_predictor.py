"""`candy train` one tiny epoch, then `candy predict` and UNetPredictor on the dataset's files."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from candy_unet import UNetPredictor
from mipcandy.cli import predict_command, train_command
from mipcandy.data.preprocess import PreprocessedDataset
from mipcandy.data.synthetic import make_synthetic_dataset
from mipcandy.inference.predictor import Predictor
from mipcandy.training.spec import read_experiment_spec


def parse(module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.configure(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("unet_predict")
    raw = make_synthetic_dataset(root / "Dataset007", ndim=2, num_cases=4, shape=(32, 32), num_classes=3,
                                 num_channels=2, progress=False)
    args = parse(train_command, "--dataset", str(raw), "--output", str(root / "out"), "--iterations", "1",
                 "--epochs", "1", "--folds", "2", "--device", "cpu", "--seed", "0")
    assert train_command.run(args) == 0
    (experiment,) = (root / "out").glob("*/unet/fold_0/2*")
    return raw, experiment, root / "out" / "preprocessed" / "Dataset007"


def test_candy_predict_writes_one_aligned_label_map_per_case(trained, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    raw, experiment, preprocessed = trained
    args = parse(predict_command, "--experiment", str(experiment), str(raw / "imagesTr"), str(tmp_path),
                 "--plan", str(preprocessed), "--tta", "--save-probabilities", "--keep-largest-component",
                 "--device", "cpu")
    assert predict_command.run(args) == 0
    assert "4 prediction(s)" in capsys.readouterr().out
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    assert sorted(p.name for p in tmp_path.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]
    for case in cases:
        source = sitk.ReadImage(str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
        result = sitk.ReadImage(str(tmp_path / f"{case}.nii.gz"))
        assert result.GetSize() == source.GetSize() and result.GetSpacing() == source.GetSpacing()
        assert result.GetOrigin() == source.GetOrigin() and result.GetDirection() == source.GetDirection()
        labels = sitk.GetArrayFromImage(result)
        assert set(np.unique(labels).tolist()) <= {0, 1, 2}
        probabilities = np.load(tmp_path / f"{case}.npz")["probabilities"]
        assert probabilities.shape == (3, *labels.shape)
        np.testing.assert_allclose(probabilities.sum(0), 1, atol=1e-5)


def test_candy_predict_names_a_case_missing_a_channel(trained, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    raw, experiment, _ = trained
    shutil.copy(raw / "imagesTr" / "case_001_0000.nii.gz", tmp_path / "case_001_0000.nii.gz")
    args = parse(predict_command, "--experiment", str(experiment), str(tmp_path), str(tmp_path / "out"),
                 "--device", "cpu")
    assert predict_command.run(args) == 2
    assert "case 'case_001': channel file case_001_0001.nii.gz is missing" in capsys.readouterr().err


def test_unet_predictor_matches_the_core_predictor(trained) -> None:
    raw, experiment, preprocessed = trained
    plan = PreprocessedDataset(preprocessed).plan
    core = list(Predictor(experiment, plan=plan).predict(raw / "imagesTr", probabilities=True))
    bundle = list(UNetPredictor(experiment, plan=plan, checkpoint="latest").predict(raw / "imagesTr",
                                                                                   probabilities=True))
    assert [p.case_id for p in core] == [p.case_id for p in bundle]
    for a, b in zip(core, bundle, strict=True):  # one epoch: the best checkpoint is the latest
        torch.testing.assert_close(a.probabilities, b.probabilities)
    # The topology is planned inside build_network from the recorded example shape, not stored as options: the
    # predictor rebuilds the trained network through the same hook.
    assert read_experiment_spec(experiment).options.bundle_options == {}


def test_predicting_a_preprocessed_dataset_restores_the_original_grid(trained) -> None:
    raw, experiment, preprocessed = trained
    dataset = PreprocessedDataset(preprocessed)
    predictions = list(UNetPredictor(experiment).predict(dataset))
    assert [p.case_id for p in predictions] == dataset.case_ids
    for i, prediction in enumerate(predictions):
        assert prediction.labels.shape == (1, *dataset.properties(i).shape)
        assert prediction.geometry == dataset.properties(i).geometry
