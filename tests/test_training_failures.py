"""How a run fails: cheap checks before expensive work, no folder left by a failed start, the epoch whose state was
really saved named after a full disk, and the original error (and event) kept when the log itself cannot be
written."""
from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest
from rich.console import Console
from torch import nn

from mipcandy import hookimpl
from mipcandy.cli import train_command
from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.roi import RandomROIDataset
from mipcandy.data.synthetic import make_synthetic_dataset, synthetic_case
from mipcandy.plugins import get_plugin_manager
from mipcandy.presets import SegmentationTrainer
from mipcandy.training import TrainingOptions, load_state
from mipcandy.training.experiment import ExperimentWriter


class Tiny(SegmentationTrainer):
    default_options = TrainingOptions(num_classes=3, iterations_per_epoch=1, preview=False, plot_every=100, seed=0)

    def build_network(self, example_shape):
        return nn.Conv2d(example_shape[0], 3, 3, padding=1)


@pytest.fixture(scope="module")
def data():
    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(24, 24), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = (image, label, Geometry.identity(2, (1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    return RandomROIDataset(dataset.subset(["case0", "case1"]), 2, patch_shape=(16, 16), seed=0), \
        dataset.subset(["case2"])


def quiet() -> Console:
    return Console(quiet=True)


def test_a_full_disk_names_the_epoch_whose_state_was_saved(data, tmp_path: Path, monkeypatch) -> None:
    save_state = ExperimentWriter.save_state

    def fill_the_disk(self, state):
        if state["epoch"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        save_state(self, state)

    monkeypatch.setattr(ExperimentWriter, "save_state", fill_the_disk)
    trainer = Tiny(tmp_path, *data, console=quiet())
    with pytest.raises(OSError, match="No space left"):
        trainer.train(3)
    folder = trainer.experiment_folder
    assert load_state(folder / "training_state.safetensors")["epoch"] == 1
    log = (folder / "logs.txt").read_text(encoding="utf-8")
    assert "Interrupted during epoch 2 (the last saved state is epoch 1)" in log


class Listener:
    def __init__(self) -> None:
        self.errors: list[str] = []

    @hookimpl
    def experiment_interrupted(self, experiment_id: str, error: str) -> None:
        self.errors.append(error)


def test_a_failing_log_keeps_the_original_error_and_the_event(data, tmp_path: Path, monkeypatch) -> None:
    listener = Listener()
    get_plugin_manager().register(listener, "failure-listener")
    log = ExperimentWriter.log

    def broken_log(self, message, **kwargs):
        if message.startswith("Interrupted"):
            raise OSError(errno.EIO, "the log's disk went away")
        log(self, message, **kwargs)

    class Explodes(Tiny):
        def validate_case(self, case_id, image, label, toolbox):
            raise ZeroDivisionError("validation broke")

    monkeypatch.setattr(ExperimentWriter, "log", broken_log)
    try:
        with pytest.raises(ZeroDivisionError, match="validation broke"), \
                pytest.warns(RuntimeWarning, match="could not write the log"):
            Explodes(tmp_path, *data, console=quiet()).train(2)
    finally:
        get_plugin_manager().unregister("failure-listener")
    assert listener.errors == ["ZeroDivisionError: validation broke"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(("flags", "message"), [
    (("--bundle", "no-such-bundle"), "no-such-bundle"),
    (("--fold", "7"), "--fold 7 does not exist with --folds 5"),
])
def test_bundle_and_fold_are_checked_before_preprocessing(tmp_path: Path, capsys, flags, message) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset011", ndim=2, num_cases=3, shape=(16, 16), progress=False)
    assert train_command.run(parse("--dataset", str(raw), "--output", str(tmp_path / "out"), *flags)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "a refused start must not preprocess or create folders"
