"""The unetpp bundle as MIP Candy sees it: discovered by entry point and built by name through its hooks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import mipcandy
from mipcandy.plugins import get_plugin_manager, reset_plugin_manager


@pytest.fixture(autouse=True)
def only_this_bundle(monkeypatch):
    """A plugin manager that loads this bundle alone, whatever else is installed or set in the environment."""
    monkeypatch.setenv("CANDY_PLUGINS", "unetpp")
    monkeypatch.delenv("CANDY_DISABLED_PLUGINS", raising=False)
    monkeypatch.delenv("CANDY_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def test_discovered_with_metadata() -> None:
    record = get_plugin_manager().require("unetpp")
    assert (record.distribution, record.module) == ("candy-unetpp", "candy_unetpp.hooks")
    assert record.hooks == ["build_network", "bundle_info"]  # the core's nnU-Net optimizer and schedule stay
    assert record.info["dimensions"] == [2, 3] and record.info["variants"] == ["2d", "3d"]


@pytest.mark.parametrize("shape", [(2, 32, 16), (1, 16, 16, 8)])
def test_builds_by_name_with_deep_supervision_off(shape) -> None:
    net = mipcandy.build_network("unetpp", example_shape=shape, num_classes=4, options={"features": [4, 8, 16]})
    assert isinstance(net, mipcandy.DeepSupervisedNetwork) and net.ndim == len(shape) - 1
    assert net(torch.zeros(1, *shape)).shape == (1, 4, *shape[1:])


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="variant '3d' does not fit a 2D input"):
        mipcandy.build_network("unetpp", example_shape=(1, 32, 32), num_classes=2, options={"variant": "3d"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['depth'\]"):
        mipcandy.build_network("unetpp", example_shape=(1, 32, 32), num_classes=2, options={"depth": 3})
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(C, D, H, W\)"):
        mipcandy.build_network("unetpp", example_shape=(1, 64), num_classes=2, options={})


def test_candy_plugins_lists_it_without_importing_torch() -> None:
    probe = ("import json, sys; from mipcandy.plugins import load_bundles; "
             "bundles = [[r.name, r.status] for r in load_bundles()]; "
             "print(json.dumps({'bundles': bundles, 'torch': 'torch' in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"bundles": [["unetpp", "ok"]], "torch": False}
