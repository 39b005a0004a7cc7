"""Bundle discovery, validation and per-bundle hook selection (mipcandy.plugins)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mipcandy import hookimpl
from mipcandy.plugins import BundleError, PluginManager, get_plugin_manager
from mipcandy.training.toolbox import TrainerToolbox

GOOD = '''
from mipcandy import hookimpl

@hookimpl
def bundle_info():
    return {"summary": "SUMMARY", "dimensions": [2], "variants": ["a"]}

@hookimpl
def build_network(example_shape, num_classes):
    import torch.nn as nn
    return nn.Conv2d(example_shape[0], num_classes, 1)
'''


class Bundle:
    """An in-process bundle whose network is tagged, so a test can tell which bundle built it."""

    def __init__(self, tag: int) -> None:
        self.tag = tag

    @hookimpl
    def build_network(self, example_shape, num_classes, options):
        net = nn.Conv2d(example_shape[0], num_classes, 1)
        net.tag = self.tag
        return net


class AdamBundle(Bundle):
    @hookimpl
    def build_optimizer(self, params, options):
        return torch.optim.Adam(params, lr=options.get("lr", 1e-3))


def test_per_bundle_hooks_never_compete_through_registration_order() -> None:
    for order in ([1, 2], [2, 1]):
        manager = PluginManager()
        for tag in order:
            manager.register(Bundle(tag), f"b{tag}")
        for tag in (1, 2):
            net = manager.call(f"b{tag}", "build_network", example_shape=(1, 8, 8), num_classes=2, options={})
            assert net.tag == tag


def test_core_default_optimizer_unless_the_bundle_overrides_it() -> None:
    manager = PluginManager()
    manager.register(Bundle(1), "plain")
    manager.register(AdamBundle(2), "adam")
    params = list(nn.Linear(2, 2).parameters())
    default = manager.call("plain", "build_optimizer", params=params, options={})
    assert isinstance(default, torch.optim.SGD)
    group = default.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (1e-2, 0.99, 3e-5, True)
    assert isinstance(manager.call("adam", "build_optimizer", params=params, options={}), torch.optim.Adam)
    assert manager.require("adam").hooks == ["build_network", "build_optimizer"]


def test_default_backward_runs_the_criterion_and_backpropagates() -> None:
    manager = PluginManager()
    manager.register(Bundle(1), "plain")
    model = nn.Conv2d(1, 2, 1)
    criterion = lambda out, lab: (nn.functional.cross_entropy(out, lab[:, 0]), {"ce": 0.5})  # noqa: E731
    toolbox = TrainerToolbox(model, torch.optim.SGD(model.parameters()), None, criterion)
    images, labels = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 1, 4, 4))
    loss, metrics = manager.call("plain", "backward", images=images, labels=labels, toolbox=toolbox, options={})
    expected = nn.functional.cross_entropy(model(images), labels[:, 0]).item()
    assert loss == pytest.approx(expected)
    assert metrics == {"ce": 0.5}
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_misspelled_hook_is_invalid_and_unregistered_while_others_load() -> None:
    class Typo:
        @hookimpl
        def build_netwrok(self, example_shape):
            raise AssertionError("never called")

    manager = PluginManager()
    bad = manager.register(Typo(), "typo")
    good = manager.register(Bundle(1), "good")
    assert bad.status == "invalid" and "build_netwrok" in bad.error
    assert not manager.pm.has_plugin("typo")
    assert good.ok
    with pytest.raises(BundleError, match="typo.*broken.*build_netwrok"):
        manager.call("typo", "build_network", example_shape=(1, 4, 4), num_classes=2, options={})


def test_hook_argument_not_in_spec_is_invalid() -> None:
    class WrongArgs:
        @hookimpl
        def build_network(self, example_shape, depth):
            raise AssertionError("never called")

    record = PluginManager().register(WrongArgs(), "wrong")
    assert record.status == "invalid" and "depth" in record.error


@pytest.mark.parametrize("info, message", [("text", "must return a dict"), ({"colour": 1}, "unknown keys"),
                                           ({"dimensions": [4]}, "dimensions")])
def test_bad_bundle_info_is_invalid(info, message) -> None:
    class BadInfo:
        @hookimpl
        def bundle_info(self):
            return info

    record = PluginManager().register(BadInfo(), "badinfo")
    assert record.status == "invalid" and message in record.error


def test_unknown_bundle_error_names_what_is_available() -> None:
    manager = PluginManager()
    manager.register(Bundle(1), "present")
    with pytest.raises(BundleError, match=r"no bundle named 'absent'.*available: .*present.*pip install candy-absent"):
        manager.call("absent", "build_network", example_shape=(1, 4, 4), num_classes=2, options={})


def test_missing_build_network_is_a_clear_error() -> None:
    class OnlyInfo:
        @hookimpl
        def bundle_info(self):
            return {"summary": "nothing to build"}

    manager = PluginManager()
    manager.register(OnlyInfo(), "info")
    with pytest.raises(BundleError, match="does not implement 'build_network'"):
        manager.call("info", "build_network", example_shape=(1, 4, 4), num_classes=2, options={})


def test_preview_is_broadcast_to_every_plugin(tmp_path) -> None:
    class Previewer:
        def __init__(self, name):
            self.name = name

        @hookimpl
        def preview(self, folder, case_id):
            path = folder / f"{self.name}-{case_id}.txt"
            path.write_text(self.name, encoding="utf-8")
            return [path]

    manager = PluginManager()
    manager.register(Previewer("a"), "a")
    manager.register(Previewer("b"), "b")
    results = manager.broadcast("preview", image=None, label=None, prediction=None, folder=tmp_path, case_id="c1")
    assert sorted(p.name for paths in results for p in paths) == ["a-c1.txt", "b-c1.txt"]
    with pytest.raises(ValueError, match="broadcast"):
        manager.call("a", "preview", folder=tmp_path)


def test_entry_point_discovery_records_broken_bundles(site_dir) -> None:
    site_dir("good", GOOD)
    site_dir("crash", "raise ImportError('needs libfoo')\n")
    records = {r.name: r for r in get_plugin_manager().records}
    assert records["good"].ok and records["good"].distribution == "candy-test-good"
    assert records["good"].version == "1.0" and records["good"].info["summary"] == "SUMMARY"
    assert records["crash"].status == "error" and records["crash"].error == "ImportError: needs libfoo"
    assert "Traceback" in records["crash"].traceback
    net = get_plugin_manager().call("good", "build_network", example_shape=(3, 8, 8), num_classes=4, options={})
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 8, 8)


def test_loading_happens_once(site_dir) -> None:
    site_dir("good", GOOD)
    manager = get_plugin_manager()
    first = list(manager.records)
    manager.load()
    assert get_plugin_manager() is manager and manager.records == first


@pytest.mark.parametrize("env, expected", [
    ({"CANDY_PLUGINS": "good"}, {"good": "ok"}),
    ({"CANDY_PLUGINS": "candy-test-other"}, {"other": "ok"}),
    ({"CANDY_PLUGINS": ""}, {}),
    ({"CANDY_DISABLED_PLUGINS": "good"}, {"good": "blocked", "other": "ok"}),
    ({"CANDY_DISABLE_PLUGIN_AUTOLOAD": "1"}, {}),
])
def test_environment_switches(site_dir, monkeypatch, env, expected) -> None:
    site_dir("good", GOOD)
    site_dir("other", GOOD)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    found = {r.name: r.status for r in get_plugin_manager().records if r.name in ("good", "other")}
    assert found == expected
    if expected.get("good") == "blocked":
        with pytest.raises(BundleError, match="blocked by CANDY_DISABLED_PLUGINS"):
            get_plugin_manager().require("good")


def test_a_failing_subscriber_never_stops_the_others(tmp_path) -> None:
    calls = []

    class Tracker:
        def __init__(self, name, fail):
            self.name, self.fail = name, fail

        @hookimpl
        def epoch_updated(self, epoch, metrics):
            if self.fail:
                raise ConnectionError("tracking server down")
            calls.append((self.name, epoch, dict(metrics)))

    manager = PluginManager()
    manager.register(Tracker("first", False), "first")
    manager.register(Tracker("down", True), "down")
    manager.register(Tracker("last", False), "last")
    with pytest.warns(RuntimeWarning, match="'down' failed in epoch_updated: ConnectionError"):
        manager.broadcast("epoch_updated", experiment_id="x", epoch=3, metrics={"loss": 0.5})
    assert sorted(calls) == [("first", 3, {"loss": 0.5}), ("last", 3, {"loss": 0.5})]
    with pytest.raises(ConnectionError):
        manager.broadcast("epoch_updated", strict=True, experiment_id="x", epoch=4, metrics={})
    with pytest.raises(ValueError, match="not a broadcast hook"):
        manager.broadcast("build_network", example_shape=(1, 4, 4))


def test_trainer_class_is_optional() -> None:
    manager = PluginManager()
    manager.register(Bundle(1), "plain")
    assert manager.call("plain", "trainer_class") is None
