"""``candy predict`` never replaces user data, and fails with one message naming the file, case or bundle.

The experiment is real: a one-convolution network built by a bundle installed on ``sys.path`` (dist-info and
entry point, as pip would), its weights in a safetensors checkpoint, and 2D NIfTI images written by SimpleITK.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from mipcandy.cli import main
from mipcandy.layer import save_weights
from mipcandy.training.options import TrainingOptions
from mipcandy.training.spec import ExperimentSpec

BUNDLE = '''
import os
from mipcandy import hookimpl

@hookimpl
def build_network(example_shape, num_classes, options):
    if os.environ.get("CANDY_TEST_BREAK_BUNDLE"):
        raise TypeError("width must be a whole number, got 'wide'")
    import torch.nn as nn
    return nn.Conv2d(example_shape[0], num_classes, 1)
'''
CASES = ("case_a", "case_b")


def threshold_conv() -> nn.Module:
    """Foreground where the intensity exceeds 5 (logits 0 and x - 5)."""
    net = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 1.0
        net.bias[1] = -5.0
    return net


@pytest.fixture
def workspace(tmp_path: Path, site_dir) -> tuple[Path, Path, Path, Path]:
    """(site dir of the bundle, experiment folder, images folder, labels folder) of a 2-case 2D dataset."""
    site = site_dir("onelayer", BUNDLE)
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    options = TrainingOptions(num_classes=2, bundle="onelayer", sliding_window_batch_size=2, seed=0)
    ExperimentSpec(experiment_id="by-hand", created="2026-01-01T00:00:00", trainer="by hand", num_epochs=1,
                   options=options, example_shape=(1, 8, 8), num_classes=2).write(experiment)
    save_weights(threshold_conv(), experiment / "checkpoint_best.safetensors")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, case in enumerate(CASES):
        image = np.zeros((8, 8), np.float32)
        image[1 + i : 5 + i, 2:6] = 10.0
        sitk.WriteImage(sitk.GetImageFromArray(image), str(images / f"{case}_0000.nii.gz"))
        label = np.zeros((8, 8), np.uint8)
        label[:2, :2] = 1  # not what the network predicts: a replaced label shows
        sitk.WriteImage(sitk.GetImageFromArray(label), str(labels / f"{case}.nii.gz"))
    return site, experiment, images, labels


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_refuses_a_folder_of_labels_and_changes_nothing(workspace, capsys) -> None:
    _, experiment, images, labels = workspace
    (labels / "notes.txt").write_text("keep", encoding="utf-8")
    before = snapshot(labels)
    assert main(["predict", "--experiment", str(experiment), str(images), str(labels), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("candy predict: ") and "Traceback" not in err
    assert "case_a.nii.gz, case_b.nii.gz" in err and "--overwrite" in err
    assert snapshot(labels) == before


def test_overwrite_replaces_them(workspace, capsys) -> None:
    _, experiment, images, labels = workspace
    argv = ["predict", "--experiment", str(experiment), str(images), str(labels), "--device", "cpu", "--overwrite"]
    assert main(argv) == 0
    for i, case in enumerate(CASES):
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{case}.nii.gz")))
        expected = np.zeros((8, 8), np.uint8)
        expected[1 + i : 5 + i, 2:6] = 1
        np.testing.assert_array_equal(written, expected)


def test_refuses_the_input_folder_even_with_overwrite(workspace, capsys) -> None:
    _, experiment, images, _ = workspace
    before = snapshot(images)
    for extra in ([], ["--overwrite"]):
        argv = ["predict", "--experiment", str(experiment), str(images), str(images), "--device", "cpu", *extra]
        assert main(argv) == 2
        assert "is the folder the images are read from" in capsys.readouterr().err
    single = images / "case_a_0000.nii.gz"  # one file: its folder is the input folder too
    assert main(["predict", "--experiment", str(experiment), str(single), str(images), "--device", "cpu"]) == 2
    assert snapshot(images) == before


def test_a_subfolder_of_the_input_folder_is_allowed(workspace, capsys) -> None:
    _, experiment, images, _ = workspace
    assert main(["predict", "--experiment", str(experiment), str(images), str(images / "pred"), "--device",
                 "cpu"]) == 0
    assert sorted(p.name for p in (images / "pred").iterdir()) == ["case_a.nii.gz", "case_b.nii.gz"]


def test_one_whole_line_per_case_off_a_terminal(workspace, tmp_path, capsys) -> None:
    _, experiment, images, _ = workspace
    output = tmp_path / ("a-folder-name-long-enough-that-80-columns-would-wrap-the-line" * 2)
    assert main(["predict", "--experiment", str(experiment), str(images), str(output), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"[1/2] case_a -> {output / 'case_a.nii.gz'}", f"[2/2] case_b -> {output / 'case_b.nii.gz'}"]
    assert lines[2] == f"2 prediction(s) written to {output}"


def test_a_corrupt_checkpoint_is_named_before_anything_is_written(workspace, tmp_path, capsys) -> None:
    _, experiment, images, _ = workspace
    checkpoint = experiment / "checkpoint_best.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-40])  # truncated
    output = tmp_path / "out"
    assert main(["predict", "--experiment", str(experiment), str(images), str(output), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {checkpoint} is not a readable safetensors file" in err and "--checkpoint latest" in err
    assert not output.exists()


def test_a_bundle_that_raises_is_named(workspace, tmp_path, monkeypatch, capsys) -> None:
    _, experiment, images, _ = workspace
    monkeypatch.setenv("CANDY_TEST_BREAK_BUNDLE", "1")
    argv = ["predict", "--experiment", str(experiment), str(images), str(tmp_path / "out"), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bundle 'onelayer' (candy-test-onelayer 1.0) failed in its own code (candy_test_onelayer.py:" in err
    assert "TypeError: width must be a whole number, got 'wide'" in err and "Traceback" not in err
    with pytest.raises(TypeError, match="width must be a whole number"):
        main([*argv, "--debug"])


def test_a_closed_pipe_ends_quietly(workspace, tmp_path) -> None:
    site, experiment, images, _ = workspace
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "mipcandy", "predict", "--experiment", str(experiment),
                                str(images), str(tmp_path / "out"), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is printed, as with `| head -0`
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
