"""The cmunext bundle as MIP Candy sees it: discovered by entry point, built by name, the paper's optimizer."""
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
    record = get_plugin_manager().require("cmunext")
    assert (record.distribution, record.module) == ("candy-cmunext", "candy_cmunext.hooks")
    assert record.hooks == ["build_network", "build_optimizer", "bundle_info"]
    assert record.info["dimensions"] == [2]
    assert record.info["variants"] == ["CMUNeXt-S", "CMUNeXt", "CMUNeXt-L"]


def test_builds_by_name() -> None:
    net = mipcandy.build_network("cmunext", example_shape=(2, 32, 64), num_classes=4,
                                 options={"variant": "CMUNeXt-S"})
    assert net(torch.zeros(2, 2, 32, 64)).shape == (2, 4, 32, 64)
    again = mipcandy.build_network("cmunext", example_shape=(2, 32, 64), num_classes=4,
                                   options={"variant": "CMUNeXt-S"})
    assert list(again.state_dict()) == list(net.state_dict())  # the predictor rebuilds the same network


def test_a_patch_off_the_divisibility_gets_padded() -> None:
    net = mipcandy.build_network("cmunext", example_shape=(1, 40, 24), num_classes=2,
                                 options={"variant": "CMUNeXt-S"})
    assert isinstance(net, mipcandy.PaddedNetwork)
    assert net(torch.zeros(2, 1, 40, 24)).shape == (2, 2, 40, 24)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"2D network, expected an input shaped \(C, H, W\)"):
        mipcandy.build_network("cmunext", example_shape=(1, 32, 32, 32), num_classes=2)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['deep_supervision'\]"):
        mipcandy.build_network("cmunext", example_shape=(1, 32, 32), num_classes=2,
                               options={"deep_supervision": True})


def test_optimizer_is_the_papers_sgd() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    # FengheTan9/CMUNeXt main.py: SGD(lr=0.01, momentum=0.9, weight_decay=0.0001)
    sgd = get_plugin_manager().call("cmunext", "build_optimizer", params=params, options={})
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.01, 0.9, 1e-4, False)
    tuned = get_plugin_manager().call("cmunext", "build_optimizer", params=params, options={"lr": 3e-3})
    assert tuned.param_groups[0]["lr"] == 3e-3 and tuned.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match=r"unknown optimizer option\(s\) \['betas'\]"):
        get_plugin_manager().call("cmunext", "build_optimizer", params=params, options={"betas": [0.9, 0.99]})


def test_discovery_does_not_import_torch() -> None:
    code = ("import sys, json; from mipcandy.plugins import load_bundles; "
            "print(json.dumps([[r.name, r.status] for r in load_bundles()]), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    listed, torch_loaded = result.stdout.rsplit(" ", 1)
    assert ["cmunext", "ok"] in json.loads(listed) and torch_loaded.strip() == "False"
