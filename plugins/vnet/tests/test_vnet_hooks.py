"""The vnet bundle as MIP Candy sees it: discovered by entry point, built by name, options checked."""
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
    record = get_plugin_manager().require("vnet")
    assert (record.distribution, record.module) == ("candy-vnet", "candy_vnet.hooks")
    assert record.hooks == ["backward", "build_network", "bundle_info"]
    assert record.info["dimensions"] == [3]


def test_builds_by_name_and_accepts_the_loss_option() -> None:
    net = mipcandy.build_network("vnet", example_shape=(2, 16, 16, 16), num_classes=3,
                                 options={"base_ch": 4, "loss": "dice", "act": "elu"})
    assert net(torch.zeros(2, 2, 16, 16, 16)).shape == (2, 3, 16, 16, 16)


@pytest.mark.parametrize(("shape", "options", "message"), [
    ((1, 64, 64), {}, r"3D only; expected an input shaped \(C, D, H, W\)"),
    ((1, 16, 16, 16), {"variant": "2d"}, r"unknown option\(s\) \['variant'\]; the options are"),
    ((1, 16, 16, 16), {"loss": "ce"}, "option loss must be one of"),
])
def test_options_are_checked(shape, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        mipcandy.build_network("vnet", example_shape=shape, num_classes=2, options=options)


def test_discovery_does_not_import_torch() -> None:
    code = ("import sys, json; from mipcandy.plugins import load_bundles; "
            "print(json.dumps([[r.name, r.status] for r in load_bundles()]), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    listed, torch_loaded = result.stdout.rsplit(" ", 1)
    assert ["vnet", "ok"] in json.loads(listed) and torch_loaded.strip() == "False"
