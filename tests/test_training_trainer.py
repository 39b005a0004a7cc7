"""The training lifecycle on a tiny 2D task: artefacts, events, EMA/best consistency, scores, stopping, resume."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from mipcandy import hookimpl
from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.roi import RandomROIDataset
from mipcandy.data.synthetic import synthetic_case
from mipcandy.layer import load_weights
from mipcandy.plugins import get_plugin_manager
from mipcandy.presets import SegmentationTrainer
from mipcandy.training import TrainerToolbox, TrainingOptions, load_state
from mipcandy.training.sanity import SanityCheckError


@pytest.fixture(scope="module")
def data():
    cases = {}
    for i in range(4):
        image, label = synthetic_case(i, shape=(32, 32), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    dataset = dataset_from_tensors(cases)
    return RandomROIDataset(dataset.subset(["case0", "case1"]), 2, patch_shape=(16, 16), seed=0), \
        dataset.subset(["case2", "case3"])


class Tiny(SegmentationTrainer):
    default_options = TrainingOptions(num_classes=3, iterations_per_epoch=2)

    def build_network(self, example_shape):
        return nn.Sequential(nn.Conv2d(example_shape[0], 8, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(8, self.options.num_classes, 1))


def quiet() -> Console:
    return Console(quiet=True)


class Recorder:
    """An in-process plugin recording the experiment events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    @hookimpl
    def experiment_created(self, experiment_id, folder, config):
        self.events.append(("created", {"folder": folder, "config": config}))

    @hookimpl
    def epoch_updated(self, experiment_id, epoch, metrics):
        self.events.append(("epoch", {"epoch": epoch, "metrics": dict(metrics)}))

    @hookimpl
    def preview_saved(self, experiment_id, epoch, paths):
        self.events.append(("preview", {"epoch": epoch, "paths": list(paths)}))

    @hookimpl
    def experiment_completed(self, experiment_id, summary):
        self.events.append(("completed", dict(summary)))

    @hookimpl
    def experiment_interrupted(self, experiment_id, error):
        self.events.append(("interrupted", {"error": error}))


@pytest.fixture
def recorder():
    plugin = Recorder()
    manager = get_plugin_manager()
    manager.register(plugin, "recorder")
    yield plugin
    manager.unregister("recorder")


def test_two_epochs_write_every_artefact_and_event(data, tmp_path: Path, recorder: Recorder) -> None:
    train, val = data
    summary = Tiny(tmp_path, train, val, console=quiet()).train(2, seed=5, ema=True)
    folder = summary.folder
    assert folder.parent == tmp_path / "data" / "Tiny"
    expected = ["config.json", "metrics.csv", "logs.txt", "progress.png", "ce_loss.png", "soft_dice.png",
                "class_dice.png", "checkpoint_latest.safetensors", "checkpoint_latest.json",
                "checkpoint_best.safetensors", "checkpoint_best.json", "training_state.safetensors"]
    for name in expected:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    previews = sorted(p.name for p in (folder / "preview").iterdir())
    assert previews and all(name.endswith(".png") for name in previews)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["num_epochs"] == 2 and config["options"]["seed"] == 5 and config["options"]["ema"] is True
    assert config["options"]["early_stop_patience"] is None and config["versions"]["mipcandy"]
    assert config["sanity"]["num_params"] == sum(p.numel() for p in nn.Conv2d(1, 8, 3).parameters()) + \
        sum(p.numel() for p in nn.Conv2d(8, 3, 1).parameters())
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for column in ("combined loss", "ce loss", "soft dice", "learning rate", "epoch duration", "val score",
                   "val dice 1", "val dice 2", "val loss", "worst case"):
        assert all(r[column] != "" for r in rows), column
    # the score is the mean foreground Dice over cases, not a loss
    assert float(rows[0]["val score"]) == pytest.approx((float(rows[0]["val dice 1"]) +
                                                          float(rows[0]["val dice 2"])) / 2)
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[0] == "created" and kinds[-1] == "completed" and kinds.count("epoch") == 2
    assert kinds.count("preview") == 2
    epochs = [payload for kind, payload in recorder.events if kind == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(not isinstance(v, list) for e in epochs for v in e["metrics"].values())  # that epoch's values only
    assert epochs[1]["metrics"]["combined loss"] == pytest.approx(float(rows[1]["combined loss"]))
    assert "Sanity check passed" in (folder / "logs.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_best_checkpoint_holds_the_validated_ema_weights(data, tmp_path: Path, decay: float) -> None:
    train, val = data
    trainer = Tiny(tmp_path, train, val, console=quiet())
    summary = trainer.train(3, seed=1, ema=True, ema_decay=decay, preview=False)
    state = load_state(summary.folder / "training_state.safetensors")
    best = trainer.build_network((1, 16, 16))
    load_weights(best, summary.folder / "checkpoint_best.safetensors")
    # validating the saved best weights reproduces the score recorded for the best epoch
    toolbox = TrainerToolbox(best, trainer.toolbox.optimizer, None, trainer.toolbox.criterion)
    with trainer.validation_mode(best), torch.no_grad():
        scores = [trainer.validate_case(val.case_id(i), *val[i], toolbox).score for i in range(len(val))]
    assert sum(scores) / len(scores) == pytest.approx(state["history"]["val score"][summary.best_epoch - 1], abs=1e-6)
    if summary.best_epoch == 3:
        ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
        assert all(torch.equal(best.state_dict()[k], v) for k, v in ema.items())
        same_as_raw = all(torch.equal(best.state_dict()[k], v) for k, v in state["model"].items())
        assert same_as_raw == (decay == 0.0)  # decay 0: the average is the raw model; otherwise it differs


def test_binary_validation_thresholds_the_sigmoid(data, tmp_path: Path) -> None:
    _, val = data

    class Binary(SegmentationTrainer):
        default_options = TrainingOptions(num_classes=1)

    trainer = Binary(tmp_path, data[0], val, console=quiet())
    trainer.patch_size = (16, 16)
    label = (val[0][1] > 0).long()

    class Constant(nn.Module):
        def __init__(self, logit: float) -> None:
            super().__init__()
            self.logit = logit

        def forward(self, x):
            return torch.full((x.shape[0], 1, *x.shape[2:]), self.logit)

    criterion = trainer.build_criterion()
    for logit, expected in ((-3.0, 0.0), (3.0, 2 * label.sum().item() / (label.sum().item() + label.numel()))):
        model = Constant(logit)
        toolbox = TrainerToolbox(model, torch.optim.SGD([nn.Parameter(torch.zeros(1))]), None, criterion)
        case = trainer.validate_case("c", val[0][0], label, toolbox)
        assert case.score == pytest.approx(expected)  # rounding a -3 logit would count it as foreground
        assert case.prediction.unique().tolist() == [int(logit > 0)]


def test_negative_loss_score(data, tmp_path: Path) -> None:
    train, val = data
    summary = Tiny(tmp_path, train, val, console=quiet()).train(1, seed=2, score="negative_loss", preview=False)
    state = load_state(summary.folder / "training_state.safetensors")
    assert state["history"]["val score"][0] == pytest.approx(-state["history"]["val loss"][0])


def test_early_stopping_is_off_by_default_and_persisted(data, tmp_path: Path) -> None:
    train, val = data
    frozen = {"optimizer_options": {"lr": 0.0}, "preview": False, "seed": 3}  # lr 0: the score never improves
    summary = Tiny(tmp_path / "a", train, val, console=quiet()).train(4, **frozen)
    assert summary.epochs == 4 and not summary.stopped_early
    stopped = Tiny(tmp_path / "b", train, val, console=quiet()).train(6, early_stop_patience=2, **frozen)
    assert stopped.epochs == 3 and stopped.stopped_early and stopped.best_epoch == 1
    state = load_state(stopped.folder / "training_state.safetensors")
    assert state["tracker"]["stale_validations"] == 2 and state["tracker"]["stopped_early"] is True


def test_resume_at_next_epoch_and_past_the_horizon(data, tmp_path: Path) -> None:
    train, val = data
    first = Tiny(tmp_path, train, val, console=quiet()).train(2, seed=4, preview=False)
    state = load_state(first.folder / "training_state.safetensors")
    assert state["scheduler"]["last_epoch"] == 2 and state["stream_position"] == 4
    resumed = Tiny(tmp_path, train, val, console=quiet()).recover_from(first.folder).continue_training(4)
    assert resumed.epochs == 4
    history = load_state(first.folder / "training_state.safetensors")["history"]
    assert history["epoch"] == [1, 2, 3, 4]  # epoch 2 is not trained again
    lrs = history["learning rate"]
    assert lrs[0] == pytest.approx(1e-2) and all(math.isfinite(lr) and lr > 0 for lr in lrs)
    config = json.loads((first.folder / "config.json").read_text(encoding="utf-8"))
    assert config["num_epochs"] == 4 and len(config["resumed"]) == 1
    with pytest.raises(ValueError, match="already trained 4 epochs"):
        Tiny(tmp_path, train, val, console=quiet()).recover_from(first.folder).continue_training(3)


class WrongChannels(Tiny):
    def build_network(self, example_shape):
        return nn.Conv2d(example_shape[0], 2, 1)


@pytest.mark.parametrize(("trainer", "error", "message"), [
    (WrongChannels, SanityCheckError, "num_classes is 3"),
    (Tiny, TypeError, "Sequential has no deep-supervision heads"),  # deep supervision asked of a single-head network
])
def test_a_network_that_does_not_fit_stops_with_a_clear_error_and_leaves_nothing(data, tmp_path: Path, trainer,
                                                                                   error, message) -> None:
    with pytest.raises(error, match=message):
        trainer(tmp_path, *data, console=quiet()).train(1, seed=0, deep_supervision=trainer is Tiny)
    assert not list(tmp_path.iterdir()), "a run that cannot start must not leave an experiment folder"


def test_amp_is_ignored_with_a_note_on_cpu(data, tmp_path: Path) -> None:
    trainer = Tiny(tmp_path, *data, console=quiet())
    summary = trainer.train(1, seed=0, amp=True, preview=False)
    assert trainer.toolbox.grad_scaler is None
    assert "amp is ignored on cpu" in (summary.folder / "logs.txt").read_text(encoding="utf-8")


def test_unknown_option_is_rejected(data, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown training option"):
        Tiny(tmp_path, *data, console=quiet()).train(1, early_stop_tolerance=3)


class ToyBundle:
    """A bundle registered in process: builds the network and runs backward, previews cases."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def build_network(self, example_shape, num_classes, options):
        self.calls.append(f"build {options.get('width')}")
        return nn.Conv2d(example_shape[0], num_classes, 3, padding=1)

    @hookimpl
    def backward(self, images, labels, toolbox):
        self.calls.append("backward")
        loss, metrics = toolbox.criterion(toolbox.model(images), labels)
        loss.backward()
        return float(loss.detach()), metrics

    @hookimpl
    def preview(self, image, label, prediction, folder, case_id):
        path = folder / f"toy_{case_id}.txt"
        path.write_text(str(tuple(prediction.shape)))
        return [path]


def test_bundle_hooks_build_train_and_preview(data, tmp_path: Path) -> None:
    bundle = ToyBundle()
    manager = get_plugin_manager()
    manager.register(bundle, "toy")
    try:
        summary = SegmentationTrainer(tmp_path, *data, console=quiet()).train(
            1, bundle="toy", bundle_options={"width": 4}, num_classes=3, iterations_per_epoch=2, seed=0)
    finally:
        manager.unregister("toy")
    assert bundle.calls == ["build 4", "backward", "backward"]
    worst = json.loads((summary.folder / "config.json").read_text(encoding="utf-8"))
    assert worst["options"]["bundle"] == "toy"
    assert list((summary.folder / "preview").glob("toy_case*.txt"))


@pytest.mark.parametrize("val_every, with_val", [(2, True), (1, False)])
def test_epochs_without_validation_train_on(data, tmp_path: Path, val_every: int, with_val: bool) -> None:
    train, val = data
    summary = Tiny(tmp_path, train, val if with_val else None, console=quiet()).train(
        3, seed=4, validate_every=val_every, preview=False, prediction_warmup=1)
    state = load_state(summary.folder / "training_state.safetensors")
    assert state["history"]["epoch"] == [1, 2, 3]
    scores = state["history"].get("val score", [math.nan] * 3)
    # validation every 2nd epoch, and always after the last one
    assert [math.isfinite(s) for s in scores] == ([False, True, True] if with_val else [False] * 3)
