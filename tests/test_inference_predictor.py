"""Predictor end to end on hand-written experiment folders (small convolution networks, real files via SimpleITK)."""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from mipcandy.cli import predict_command
from mipcandy.data.cases import parse_predictant
from mipcandy.data.dataset import DatasetError, dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.io import fast_load
from mipcandy.data.preprocessing_plan import PreprocessingPlan
from mipcandy.inference.predictor import Predictor
from mipcandy.layer import save_weights
from mipcandy.training.options import TrainingOptions
from mipcandy.training.spec import ExperimentSpec


def conv_net(channels: int, classes: int, ndim: int, kernel: int) -> nn.Module:
    conv = nn.Conv3d if ndim == 3 else nn.Conv2d
    return conv(channels, classes, kernel, padding=kernel // 2)


class ConvPredictor(Predictor):
    """A predictor whose network the user builds (no bundle): one convolution, kernel size from bundle_options."""

    def build_network(self, example_shape: Sequence[int]) -> nn.Module:
        return conv_net(example_shape[0], self.num_classes, len(example_shape) - 1,
                        self.options.bundle_options["kernel"])


def write_experiment(folder: Path, best: nn.Module, *, example_shape: Sequence[int], num_classes: int,
                     latest: nn.Module | None = None, kernel: int = 1, plan: PreprocessingPlan | None = None) -> Path:
    folder.mkdir(parents=True)
    options = TrainingOptions(num_classes=num_classes, bundle_options={"kernel": kernel}, sliding_window_batch_size=2,
                              seed=0)
    ExperimentSpec(experiment_id=folder.name, created="2026-01-01T00:00:00", trainer="by hand", num_epochs=1,
                   options=options, example_shape=tuple(example_shape), num_classes=num_classes,
                   preprocessing_plan=plan).write(folder)
    save_weights(best, folder / "checkpoint_best.safetensors")
    save_weights(latest if latest is not None else best, folder / "checkpoint_latest.safetensors")
    (folder / "checkpoint_best.json").write_text(json.dumps({"epoch": 3}), encoding="utf-8")
    return folder


def threshold_net(ndim: int, channels: int = 1, threshold: float = 5.0) -> nn.Module:
    """Two classes per voxel: logit 0 for background, (channel 0 - threshold) for foreground."""
    net = conv_net(channels, 2, ndim, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 1.0
        net.bias[1] = -threshold
    return net


def oblique_direction() -> tuple[float, ...]:
    a, b = math.radians(30), math.radians(20)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel().tolist())


def write_volume(path: Path, array: np.ndarray, *, spacing=(0.7, 0.9, 2.5), origin=(-12.5, 40.25, 7.0),
                 direction: tuple[float, ...] | None = None) -> None:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction if direction is not None else oblique_direction())
    sitk.WriteImage(image, str(path))


def block_volume(shape=(10, 20, 24)) -> np.ndarray:
    array = np.zeros(shape, dtype=np.float32)
    array[2:8, 4:16, 6:20] = 1.0
    array[3:7, 6:12, 8:14] = 10.0
    return array


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_exported_geometry_and_shape_equal_the_input(tmp_path: Path, ending: str) -> None:
    experiment = write_experiment(tmp_path / "exp", threshold_net(3), example_shape=(1, 8, 16, 16), num_classes=2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    array = block_volume()
    write_volume(inputs / f"liver_7_0000{ending}", array)
    written = ConvPredictor(experiment).predict_to_files(inputs, tmp_path / "out", progress=False)
    assert written == [tmp_path / "out" / f"liver_7{ending}"]
    source, result = sitk.ReadImage(str(inputs / f"liver_7_0000{ending}")), sitk.ReadImage(str(written[0]))
    assert result.GetSize() == source.GetSize()
    assert result.GetSpacing() == source.GetSpacing()
    assert result.GetOrigin() == source.GetOrigin()
    if ending == ".mha":
        assert result.GetDirection() == source.GetDirection()
    else:  # NIfTI stores the rotation as a float32 quaternion: writing it again rounds at float32 precision
        np.testing.assert_allclose(result.GetDirection(), source.GetDirection(), rtol=0, atol=1e-7)
    assert source.GetDirection() != Geometry.identity(3).direction and any(source.GetOrigin())
    labels = sitk.GetArrayFromImage(result)
    assert set(np.unique(labels).tolist()) <= {0, 1}
    np.testing.assert_array_equal(labels, array > 5)


def test_prediction_is_restored_through_crop_and_resampling(tmp_path: Path) -> None:
    plan = PreprocessingPlan(normalization=("nonorm",), intensity=(None,), target_spacing=(1.25, 2.0, 2.0))
    experiment = write_experiment(tmp_path / "exp", threshold_net(3), example_shape=(1, 8, 8, 8), num_classes=2,
                                  plan=plan)
    array = block_volume((10, 20, 24))
    write_volume(tmp_path / "scan.nii.gz", array, spacing=(1.0, 1.0, 2.5), direction=Geometry.identity(3).direction)
    predictor = ConvPredictor(experiment)
    assert predictor.plan == plan  # read from config.json
    (prediction,) = predictor.predict(tmp_path / "scan.nii.gz", probabilities=True)
    assert prediction.labels.shape == (1, *array.shape)
    labels = prediction.labels[0].numpy()
    assert not labels[array == 0].any()  # outside the crop box: background
    assert (labels == (array > 5)).mean() > 0.995  # resampled to (1.25, 2, 2) mm and back
    probabilities = prediction.probabilities
    torch.testing.assert_close(probabilities.sum(0), torch.ones(array.shape), atol=1e-5, rtol=0)
    assert torch.all(probabilities[0][torch.from_numpy(array == 0)] == 1)
    without = ConvPredictor(experiment, plan=PreprocessingPlan(("nonorm",), (None,), None, crop=False))
    (plain,) = without.predict(tmp_path / "scan.nii.gz")
    np.testing.assert_array_equal(plain.labels[0].numpy(), array > 5)


def test_parse_predictant_sorts_groups_and_names_missing_channels(tmp_path: Path) -> None:
    for name in ("b_0000", "a_0001", "a_0000", "b_0001", "c"):
        write_volume(tmp_path / f"{name}.nii.gz", np.full((2, 3, 4), len(name), np.float32))
    (tmp_path / "README.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / ".a_0002.nii.gz.tmp").write_text("unfinished write", encoding="utf-8")
    cases = parse_predictant(tmp_path)
    assert [c.case_id for c in cases] == ["a", "b", "c"]
    assert [p.name for p in cases[0].files] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    image, geometry = cases[1].load()
    assert image.shape == (2, 2, 3, 4) and geometry.ndim == 3
    (tmp_path / "b_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'b': channel file b_0001\.nii\.gz is missing"):
        parse_predictant(tmp_path, num_channels=2)
    write_volume(tmp_path / "b_0001.nii.gz", np.ones((2, 3, 4), np.float32))
    write_volume(tmp_path / "b_0002.nii.gz", np.ones((2, 3, 4), np.float32))
    with pytest.raises(DatasetError, match=r"case 'b': b_0002\.nii\.gz is channel 2, but the network takes 2"):
        parse_predictant(tmp_path, num_channels=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_predictant(tmp_path / "nothing")
    with pytest.raises(TypeError, match="not a mix"):
        parse_predictant([tmp_path / "c.nii.gz", torch.zeros(1, 2, 2)])


def test_parse_predictant_tensors_lists_and_datasets() -> None:
    batch = torch.rand(3, 1, 5, 6)
    assert [c.case_id for c in parse_predictant(batch, ndim=2)] == ["case0000", "case0001", "case0002"]
    assert torch.equal(parse_predictant(batch, ndim=2)[2].load()[0], batch[2])
    assert len(parse_predictant(batch[0], ndim=2)) == 1
    assert len(parse_predictant([batch[0], batch[1]])) == 2
    geometry = Geometry((2.0, 3.0), (1.0, -4.0), (0.0, 1.0, 1.0, 0.0))
    dataset = dataset_from_tensors({"z": (batch[0], torch.zeros(1, 5, 6, dtype=torch.long), geometry),
                                    "y": (batch[1], torch.zeros(1, 5, 6, dtype=torch.long), geometry)})
    cases = parse_predictant(dataset)
    assert [c.case_id for c in cases] == ["y", "z"]
    image, loaded = cases[1].load()
    assert torch.equal(image, batch[0]) and loaded == geometry


def test_channel_count_mismatch_names_the_case(tmp_path: Path) -> None:
    experiment = write_experiment(tmp_path / "exp", threshold_net(3, channels=2), example_shape=(2, 8, 8, 8),
                                  num_classes=2)
    write_volume(tmp_path / "single.nii.gz", np.ones((4, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"case 'single' has 1 input channel\(s\) but the network .* takes 2"):
        list(ConvPredictor(experiment).predict(tmp_path / "single.nii.gz"))
    write_volume(tmp_path / "duo_0000.nii.gz", np.ones((4, 8, 8), np.float32))
    with pytest.raises(DatasetError, match=r"case 'duo': channel file duo_0001\.nii\.gz is missing"):
        ConvPredictor(experiment).predict_to_files(tmp_path / "duo_0000.nii.gz", tmp_path / "out", progress=False)


def test_best_and_latest_checkpoints_and_clear_errors(tmp_path: Path) -> None:
    best, latest = threshold_net(2, threshold=-1.0), threshold_net(2, threshold=100.0)
    experiment = write_experiment(tmp_path / "exp", best, latest=latest, example_shape=(1, 8, 8), num_classes=2)
    image = torch.rand(1, 12, 9)
    predictor = ConvPredictor(experiment)
    assert predictor._model is None  # weights load lazily
    assert predictor.predict_case(image).labels.eq(1).all()
    assert predictor.checkpoint_info == {"epoch": 3}
    assert ConvPredictor(experiment, checkpoint="latest").predict_case(image).labels.eq(0).all()
    (experiment / "checkpoint_best.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint_best.safetensors .* latest"):
        ConvPredictor(experiment)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ConvPredictor(tmp_path / "missing")
    (experiment / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        ConvPredictor(experiment, checkpoint="latest")
    with pytest.raises(NotImplementedError, match="build_network"):
        _ = write_experiment(tmp_path / "plain", best, example_shape=(1, 8, 8), num_classes=2) and \
            Predictor(tmp_path / "plain").model


def test_tta_equals_manual_mirror_averaging(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = conv_net(1, 3, 3, 3)
    experiment = write_experiment(tmp_path / "exp", net, example_shape=(1, 6, 8, 10), num_classes=3, kernel=3)
    image = torch.rand(1, 6, 8, 10)  # one window: the sliding window adds nothing to the network's output
    tta = ConvPredictor(experiment, tta=True).predict_case(image, probabilities=True).probabilities
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]  # spatial dims of (1, C, D, H, W)
    with torch.no_grad():
        mean = torch.stack([net(image[None].flip(f)).flip(f)[0] for f in flips]).mean(0)
    torch.testing.assert_close(tta, mean.softmax(0), atol=1e-5, rtol=1e-5)
    plain = ConvPredictor(experiment).predict_case(image, probabilities=True).probabilities
    assert not torch.allclose(tta, plain, atol=1e-4)


def test_tta_changes_nothing_for_a_mirror_symmetric_network(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = conv_net(1, 2, 2, 3)
    with torch.no_grad():
        net.weight.copy_((net.weight + net.weight.flip(2) + net.weight.flip(3) + net.weight.flip(2, 3)) / 4)
    experiment = write_experiment(tmp_path / "exp", net, example_shape=(1, 8, 8), num_classes=2, kernel=3)
    image = torch.rand(1, 21, 17)
    plain = ConvPredictor(experiment).predict_case(image, probabilities=True).probabilities
    mirrored = ConvPredictor(experiment, tta=True).predict_case(image, probabilities=True).probabilities
    torch.testing.assert_close(mirrored, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["npz", "safetensors"])
def test_saved_probabilities_sum_to_one_and_match_the_labels(tmp_path: Path, form: str) -> None:
    torch.manual_seed(2)
    experiment = write_experiment(tmp_path / "exp", conv_net(1, 3, 3, 3), example_shape=(1, 8, 8, 8),
                                  num_classes=3, kernel=3)
    write_volume(tmp_path / "p_0000.nii.gz", np.random.default_rng(0).random((9, 11, 13)))
    ConvPredictor(experiment).predict_to_files(tmp_path / "p_0000.nii.gz", tmp_path / "out", progress=False,
                                               save_probabilities=True, probabilities_format=form)
    if form == "npz":
        probabilities = torch.from_numpy(np.load(tmp_path / "out" / "p.npz")["probabilities"])
    else:
        probabilities, geometry = fast_load(tmp_path / "out" / "p.safetensors")
        assert geometry == Geometry.from_sitk(sitk.ReadImage(str(tmp_path / "p_0000.nii.gz")))
    assert probabilities.shape == (3, 9, 11, 13)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(9, 11, 13), atol=1e-5, rtol=0)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "p.nii.gz")))
    np.testing.assert_array_equal(labels, probabilities.argmax(0).numpy())


def test_png_in_png_out_and_largest_component(tmp_path: Path) -> None:
    experiment = write_experiment(tmp_path / "exp", threshold_net(2, threshold=100), example_shape=(1, 16, 16),
                                  num_classes=2)
    array = np.zeros((30, 40), np.uint8)
    array[2:12, 3:15] = 200  # large blob
    array[20:24, 30:33] = 200  # small blob
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "photo.png"))
    out = ConvPredictor(experiment).predict_to_files(tmp_path / "photo.png", tmp_path / "a", progress=False)
    assert out == [tmp_path / "a" / "photo.png"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out[0]))), array > 100)
    kept = ConvPredictor(experiment, keep_largest=True).predict_to_files(tmp_path / "photo.png", tmp_path / "b",
                                                                          progress=False)
    expected = np.zeros_like(array)
    expected[2:12, 3:15] = 1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(kept[0]))), expected)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    predict_command.configure(parser)
    return parser.parse_args(argv)


def test_cli_reports_unusable_experiments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict_command.run(parse("--experiment", str(tmp_path / "nope"), str(tmp_path), str(tmp_path / "o"))) == 2
    assert "experiment folder" in capsys.readouterr().err
    experiment = write_experiment(tmp_path / "exp", threshold_net(2), example_shape=(1, 8, 8), num_classes=2)
    (experiment / "checkpoint_best.safetensors").unlink()
    assert predict_command.run(parse("--experiment", str(experiment), str(tmp_path), str(tmp_path / "o"))) == 2
    assert "checkpoint_best.safetensors" in capsys.readouterr().err
    write_volume(tmp_path / "x.nii.gz", np.ones((3, 8, 8)))
    args = parse("--experiment", str(experiment), str(tmp_path / "x.nii.gz"), str(tmp_path / "o"), "--checkpoint",
                 "latest", "--device", "cpu")
    assert predict_command.run(args) == 2
    assert "case 'x': expected a (C, *spatial) image with 2 spatial axes" in capsys.readouterr().err
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.float32)), str(tmp_path / "y.mha"))
    args = parse("--experiment", str(experiment), str(tmp_path / "y.mha"), str(tmp_path / "o"), "--checkpoint",
                 "latest", "--device", "cpu")
    assert predict_command.run(args) == 2  # no bundle and no build_network
    assert "build_network" in capsys.readouterr().err
