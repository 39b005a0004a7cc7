"""The unet bundle as MIP Candy sees it: discovered by entry point, built by name through the hooks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import mipcandy
from mipcandy.plugins import get_plugin_manager, reset_plugin_manager


@pytest.fixture(autouse=True)
def _fresh_manager(monkeypatch):
    for name in ("CANDY_PLUGINS", "CANDY_DISABLED_PLUGINS", "CANDY_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def test_discovered_with_metadata() -> None:
    record = get_plugin_manager().require("unet")
    assert (record.distribution, record.module) == ("candy-unet", "candy_unet.hooks")
    assert record.hooks == ["build_network", "bundle_info"]
    assert record.info["dimensions"] == [2, 3] and record.info["variants"] == ["2d", "3d"]


@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 32, 32, 32)])
def test_builds_by_name_for_the_input_rank(shape) -> None:
    net = mipcandy.build_network("unet", example_shape=shape, num_classes=4, options={"hidden_chs": (8, 16, 32)})
    assert net.ndim == len(shape) - 1
    assert net(torch.zeros(1, *shape)).shape == (1, 4, *shape[1:])


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="variant '3d' does not fit a 2D input"):
        mipcandy.build_network("unet", example_shape=(1, 64, 64), num_classes=2, options={"variant": "3d"})
    with pytest.raises(ValueError, match="depth"):
        mipcandy.build_network("unet", example_shape=(1, 64, 64), num_classes=2, options={"depth": 3})
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(C, D, H, W\)"):
        mipcandy.build_network("unet", example_shape=(1, 64), num_classes=2)


def test_discovery_does_not_import_torch() -> None:
    code = ("import sys, json; from mipcandy.plugins import load_bundles; "
            "print(json.dumps([[r.name, r.status] for r in load_bundles()]), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    listed, torch_loaded = result.stdout.rsplit(" ", 1)
    assert ["unet", "ok"] in json.loads(listed) and torch_loaded.strip() == "False"
