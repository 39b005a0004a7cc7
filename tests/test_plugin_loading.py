"""Plugins cannot take the CLI down or over: failing, hanging and conflicting imports; switches; dispatch caching."""
from __future__ import annotations

import json

import pytest

from mipcandy import hookimpl
from mipcandy.cli.plugins_command import _why_none
from mipcandy.plugins import BundleError, PluginManager, get_plugin_manager

BUNDLE = '''
from mipcandy import hookimpl

@hookimpl
def build_network(example_shape, num_classes):
    import torch.nn as nn
    return nn.Conv2d(example_shape[0], num_classes, 1)
'''

FRONTEND = '''
from mipcandy import hookimpl
SEEN = []

@hookimpl
def epoch_updated(experiment_id, epoch, metrics):
    SEEN.append((experiment_id, epoch))
'''


def test_a_bundle_calling_sys_exit_at_import_is_that_bundles_error(site_dir, candy_cli) -> None:
    site = site_dir("quitter", "import sys\nsys.exit(3)\n")
    site_dir("fine", BUNDLE)
    records = {r.name: r for r in get_plugin_manager().records}
    assert records["quitter"].status == "error" and records["quitter"].error == "SystemExit: 3"
    assert records["fine"].ok
    result = candy_cli("plugins", "--json", pythonpath=site)
    assert result.returncode == 0, result.stderr
    listed = {entry["name"]: entry["status"] for entry in json.loads(result.stdout)}
    assert listed["quitter"] == "error" and listed["fine"] == "ok"


def test_a_slow_import_names_the_bundle_and_how_to_skip_it(site_dir, monkeypatch, capsys) -> None:
    monkeypatch.setattr("mipcandy.plugins.SLOW_IMPORT_SECONDS", 0.05)
    site_dir("sleepy", "import time\ntime.sleep(0.5)\n" + BUNDLE)
    assert get_plugin_manager().require("sleepy").ok
    err = capsys.readouterr().err
    assert "loading bundle 'sleepy' is taking more than" in err and "CANDY_DISABLED_PLUGINS=sleepy" in err


def test_two_distributions_claiming_one_name_are_both_refused(site_dir) -> None:
    site_dir("unet", BUNDLE, distribution="candy-impostor")
    site_dir("unet", BUNDLE, distribution="candy-genuine")
    manager = get_plugin_manager()
    mine = [r for r in manager.records if r.distribution in ("candy-impostor", "candy-genuine")]
    assert sorted(r.status for r in mine) == ["conflict", "conflict"]
    assert not manager.pm.has_plugin("unet")
    with pytest.raises(BundleError, match="claimed twice.*candy-genuine.*candy-impostor.*neither is used"):
        manager.require("unet")


@pytest.mark.parametrize("value, loads", [("1", False), ("true", False), ("YES", False), ("on", False),
                                          ("0", True), ("false", True), ("no", True), ("", True)])
def test_autoload_switch_follows_the_usual_truthiness(site_dir, monkeypatch, value, loads) -> None:
    site_dir("fine", BUNDLE)
    monkeypatch.setenv("CANDY_DISABLE_PLUGIN_AUTOLOAD", value)
    manager = get_plugin_manager()
    assert any(r.name == "fine" for r in manager.records) is loads
    assert ("fine" in manager.filtered) is not loads


def test_candy_plugins_tells_filtered_and_autoload_off_from_none(site_dir, candy_cli) -> None:
    site = site_dir("fine", BUNDLE)
    filtered = candy_cli("plugins", env={"CANDY_PLUGINS": ""}, pythonpath=site)
    assert filtered.returncode == 0 and "filtered out by CANDY_PLUGINS=''" in filtered.stdout
    assert "fine" in filtered.stdout
    off = candy_cli("plugins", env={"CANDY_DISABLE_PLUGIN_AUTOLOAD": "yes"}, pythonpath=site)
    assert off.returncode == 0 and "CANDY_DISABLE_PLUGIN_AUTOLOAD=yes" in off.stdout
    manager = PluginManager()
    manager.load()
    manager.filtered = []  # what a machine without any installed plugin holds
    assert _why_none(manager).startswith("none installed")


def test_a_wrapper_on_a_broadcast_hook_is_refused() -> None:
    class Wrapping:
        @hookimpl(wrapper=True)
        def epoch_updated(self, epoch):
            return (yield)

    record = PluginManager().register(Wrapping(), "wrapping")
    assert record.status == "invalid" and "broadcast hook" in record.error and "wrapper" in record.error


def test_per_bundle_callers_are_built_once_and_rebuilt_when_plugins_change(monkeypatch) -> None:
    class Plain:
        @hookimpl
        def build_network(self, example_shape, num_classes):
            import torch.nn as nn
            return nn.Conv2d(example_shape[0], num_classes, 1)

    manager = PluginManager()
    manager.register(Plain(), "plain")
    built = []
    original = manager.pm.subset_hook_caller
    monkeypatch.setattr(manager.pm, "subset_hook_caller", lambda *a, **k: built.append(a) or original(*a, **k))
    for _ in range(3):
        manager.call("plain", "build_network", example_shape=(1, 4, 4), num_classes=2, options={})
    assert len(built) == 1
    manager.register(Plain(), "another")
    manager.call("plain", "build_network", example_shape=(1, 4, 4), num_classes=2, options={})
    assert built.count(("build_network",)) == 2  # the new plugin must not leak into the cached subset


def test_frontends_come_from_their_own_group_and_get_events_only_when_delivered(site_dir) -> None:
    site_dir("tracker", FRONTEND, group="mipcandy.frontends")
    manager = get_plugin_manager()
    record = manager.require("tracker", "frontend")
    assert record.kind == "frontend" and record.hooks == ["epoch_updated"]
    with pytest.raises(BundleError, match="no bundle named 'tracker'"):
        manager.require("tracker")
    import candy_test_tracker

    manager.broadcast("epoch_updated", experiment_id="run", epoch=1, metrics={})
    assert candy_test_tracker.SEEN == []
    manager.deliver("tracker", "epoch_updated", experiment_id="run", epoch=2, metrics={})
    assert candy_test_tracker.SEEN == [("run", 2)]


def test_a_frontend_implementing_bundle_hooks_is_invalid(site_dir) -> None:
    site_dir("confused", BUNDLE, group="mipcandy.frontends")
    record = get_plugin_manager().get("confused", "frontend")
    assert record.status == "invalid" and "only the experiment events" in record.error
