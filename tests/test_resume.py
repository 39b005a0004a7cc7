"""`candy train --resume FOLDER` restores the run from its record alone, and refuses, changing nothing, what would
alter it: each case below once lost or corrupted a run."""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk

from mipcandy.cli import train_command
from mipcandy.data.synthetic import make_synthetic_dataset
from mipcandy.training.spec import read_experiment_spec

TINY = ("--iterations", "1", "--folds", "2", "--device", "cpu", "--seed", "0")
SMALL_UNET = ("--bundle-option", "hidden_chs=[4,8]")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    return parser.parse_args(argv)


def folder_hash(folder: Path) -> str:
    """Every file's relative path, mode and bytes, hashed: equal hashes mean a byte-identical folder."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(oct(path.stat().st_mode).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def train(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str, epochs: int = 1) -> tuple[Path, Path]:
    raw = make_synthetic_dataset(tmp_path / "Dataset009_Resume", ndim=2, num_cases=4, shape=(32, 32), num_classes=2,
                                 progress=False)
    network = () if "--bundle" in extra or "hidden_chs=[8,16]" in extra else SMALL_UNET
    args = parse("--dataset", str(raw), "--output", str(tmp_path / "out"), "--epochs", str(epochs), *TINY, *network,
                 *extra)
    assert train_command.run(args) == 0
    return raw, Path(capsys.readouterr().out.strip().splitlines()[-1])


def refused(folder: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a resume that must be refused; returns its message after checking the folder did not change."""
    before = folder_hash(folder)
    assert train_command.run(parse("--resume", str(folder), *argv)) == 2
    assert folder_hash(folder) == before, "a refused resume changed the experiment folder"
    return capsys.readouterr().err


def metric_rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "metrics.csv").open(encoding="utf-8")))


def test_resume_from_the_folder_alone_continues_with_the_recorded_run(tmp_path: Path, monkeypatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, folder = train(tmp_path, capsys, "--bundle", "cmunext", "--bundle-option", "variant=CMUNeXt-S", epochs=2)
    spec = read_experiment_spec(folder)
    assert spec.options.bundle == "cmunext" and folder.parts[-4:-1] == ("Dataset009_Resume", "cmunext", "fold_0")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # Without --epochs the recorded 2 epochs stand (it once became 1000); without --bundle the recorded bundle
    # (not unet) trains; without --dataset the recorded dataset and cache are used (nothing in the cwd).
    assert train_command.run(parse("--resume", str(folder))) == 0
    resumed = read_experiment_spec(folder)
    assert resumed.num_epochs == 2 and resumed.options.bundle == "cmunext" and len(resumed.resumed) == 1
    assert resumed.data == spec.data and resumed.options == spec.options
    assert [row["epoch"] for row in metric_rows(folder)] == ["1", "2"]
    assert list(elsewhere.iterdir()) == []


def test_resume_extends_with_epochs_and_keeps_the_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, folder = train(tmp_path, capsys, "--fold", "1")
    split = read_experiment_spec(folder).data
    assert train_command.run(parse("--resume", str(folder), "--epochs", "2")) == 0
    spec = read_experiment_spec(folder)
    assert spec.num_epochs == 2 and spec.data == split and split.fold == 1
    assert [row["epoch"] for row in metric_rows(folder)] == ["1", "2"]


def test_flags_that_would_change_the_run_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, folder = train(tmp_path, capsys)
    other = make_synthetic_dataset(tmp_path / "Dataset010_Other", ndim=2, num_cases=4, shape=(32, 32),
                                   num_classes=2, progress=False)
    assert "--folds 3 (recorded: 2)" in refused(folder, capsys, "--folds", "3")
    assert "--dataset" in refused(folder, capsys, "--dataset", str(other))
    assert '--bundle "mednext" (recorded: "unet")' in refused(folder, capsys, "--bundle", "mednext")
    assert "--batch-size 4 (recorded: 2)" in refused(folder, capsys, "--batch-size", "4")
    # Repeating what was recorded is fine: the same dataset, the same folds.
    assert train_command.run(parse("--resume", str(folder), "--dataset", str(raw), "--folds", "2")) == 0


def test_a_dataset_that_changed_is_refused_naming_the_cases(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    raw, folder = train(tmp_path, capsys)
    label = raw / "labelsTr" / "case_002.nii.gz"
    image = sitk.ReadImage(str(label))
    sitk.WriteImage(sitk.Flip(image, (True, False)), str(label))  # same size, other content
    os.utime(label, ns=(1, 1))
    shutil.copy(raw / "imagesTr" / "case_000_0000.nii.gz", raw / "imagesTr" / "case_009_0000.nii.gz")
    shutil.copy(raw / "labelsTr" / "case_000.nii.gz", raw / "labelsTr" / "case_009.nii.gz")
    metadata = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    (raw / "dataset.json").write_text(json.dumps({**metadata, "numTraining": 5}), encoding="utf-8")
    message = refused(folder, capsys)
    assert "cases added: case_009" in message and "cases whose files changed: case_002" in message


def test_an_incompatible_dataset_is_refused_before_anything_is_written(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    raw, folder = train(tmp_path, capsys)
    shutil.rmtree(raw)
    make_synthetic_dataset(raw, ndim=3, num_cases=4, shape=(8, 16, 16), num_classes=2, progress=False)
    message = refused(folder, capsys)
    assert "changed since" in message and read_experiment_spec(folder).ndim == 2


def test_checkpoints_without_a_state_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, folder = train(tmp_path, capsys, epochs=2)
    (folder / "training_state.safetensors").unlink()
    message = refused(folder, capsys, "--epochs", "3")
    assert "checkpoints of 2 epochs but no training_state.safetensors" in message


def test_a_state_that_does_not_fit_the_network_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, folder = train(tmp_path, capsys)
    _, other = train(tmp_path / "wider", capsys, "--bundle-option", "hidden_chs=[8,16]")
    shutil.copy(other / "training_state.safetensors", folder / "training_state.safetensors")
    message = refused(folder, capsys, "--epochs", "2")
    assert "does not fit the network" in message and "nothing was changed" in message


def test_a_folder_that_is_not_an_experiment_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert "config.json is missing" in refused(tmp_path / "empty", capsys)
