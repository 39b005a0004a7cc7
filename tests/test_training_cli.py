"""``candy train`` end to end on a small synthetic nnU-Net dataset (in process: the lead wires the command)."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from mipcandy.cli import train_command
from mipcandy.data.synthetic import make_synthetic_dataset
from mipcandy.training.spec import read_experiment_spec


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    return parser.parse_args(argv)


def test_train_command_trains_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset001", ndim=2, num_cases=5, shape=(32, 32), num_classes=2,
                                 progress=False)
    common = ("--dataset", str(raw), "--output", str(tmp_path / "out"), "--iterations", "2", "--device", "cpu",
              "--seed", "0")
    assert train_command.run(parse(*common, "--fold", "1", "--epochs", "1")) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert folder.parent == tmp_path / "out" / "Dataset001" / "unet" / "fold_1"
    spec = read_experiment_spec(folder)
    assert spec.data.fold == 1 and spec.data.num_folds == 5 and spec.options.bundle == "unet"
    assert spec.bundle.distribution == "candy-unet"
    assert spec.data.dataset == str(raw.resolve()) and len(spec.data.val_cases) == 1
    assert train_command.run(parse("--epochs", "2", "--resume", str(folder))) == 0
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_bad_arguments_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_command.run(parse("--dataset", str(tmp_path / "missing"), "--output", str(tmp_path))) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--dataset", "x", "--fold", "first")
