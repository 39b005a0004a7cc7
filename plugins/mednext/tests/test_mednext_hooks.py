"""The mednext bundle as MIP Candy sees it: discovery, building by name, and the recipe's optimizer."""
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
    record = get_plugin_manager().require("mednext")
    assert (record.distribution, record.module) == ("candy-mednext", "candy_mednext.hooks")
    assert record.hooks == ["build_network", "build_optimizer", "bundle_info"]
    assert record.info["dimensions"] == [2, 3] and record.info["variants"] == ["S", "B", "M", "L"]


@pytest.mark.parametrize("shape", [(2, 32, 32), (1, 32, 32, 16)])
def test_builds_by_name_for_the_input_rank(shape) -> None:
    net = mipcandy.build_network("mednext", example_shape=shape, num_classes=4,
                                 options={"variant": "s", "kernel_size": 5, "base_ch": 4, "block_counts": 1})
    assert net.ndim == len(shape) - 1 and net.encoder[0][0].depthwise.kernel_size == (5,) * net.ndim
    assert net(torch.zeros(1, *shape)).shape == (1, 4, *shape[1:])


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(C, D, H, W\)"):
        mipcandy.build_network("mednext", example_shape=(1, 64), num_classes=2)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['depth'\]"):
        mipcandy.build_network("mednext", example_shape=(1, 64, 64), num_classes=2, options={"depth": 3})


def test_optimizer_is_the_recipes_adamw() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = get_plugin_manager().call("mednext", "build_optimizer", params=params, options={})
    assert type(optimizer) is torch.optim.AdamW
    group = optimizer.param_groups[0]
    # official nnUNetTrainerV2_Optim_and_LR: AdamW(lr 1e-3, weight_decay=nnU-Net v1's 3e-5, eps=1e-4)
    assert (group["lr"], group["weight_decay"], group["eps"], group["betas"]) == (1e-3, 3e-5, 1e-4, (0.9, 0.999))
    override = get_plugin_manager().call("mednext", "build_optimizer", params=params, options={"lr": 3e-4})
    assert override.param_groups[0]["lr"] == 3e-4 and override.param_groups[0]["eps"] == 1e-4
    with pytest.raises(ValueError, match=r"unknown optimizer option\(s\) \['momentum'\]"):
        get_plugin_manager().call("mednext", "build_optimizer", params=params, options={"momentum": 0.9})


def test_discovery_does_not_import_torch() -> None:
    code = ("import sys, json; from mipcandy.plugins import load_bundles; "
            "print(json.dumps([[r.name, r.status] for r in load_bundles()]), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    listed, torch_loaded = result.stdout.rsplit(" ", 1)
    assert ["mednext", "ok"] in json.loads(listed) and torch_loaded.strip() == "False"
