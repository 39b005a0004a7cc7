"""The unetr bundle as MIP Candy sees it: discovered by entry point, built and optimized through its hooks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import mipcandy
from mipcandy.plugins import get_plugin_manager, reset_plugin_manager

TINY = {"hidden_size": 16, "mlp_dim": 32, "num_heads": 2, "num_layers": 4, "feature_size": 4}


@pytest.fixture(autouse=True)
def only_this_bundle(monkeypatch):
    """A plugin manager that loads this bundle alone, whatever else is installed or set in the environment."""
    monkeypatch.setenv("CANDY_PLUGINS", "unetr")
    monkeypatch.delenv("CANDY_DISABLED_PLUGINS", raising=False)
    monkeypatch.delenv("CANDY_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def test_discovered_with_metadata() -> None:
    record = get_plugin_manager().require("unetr")
    assert (record.distribution, record.module) == ("candy-unetr", "candy_unetr.hooks")
    assert record.hooks == ["build_network", "build_optimizer", "bundle_info"]
    assert record.info["dimensions"] == [2, 3] and record.info["variants"] == ["2d", "3d"]


@pytest.mark.parametrize("shape", [(2, 32, 48), (1, 16, 32, 32)])
def test_builds_for_the_example_size(shape) -> None:
    net = mipcandy.build_network("unetr", example_shape=shape, num_classes=4, options=TINY)
    assert net.img_size == shape[1:]
    assert net(torch.zeros(1, *shape)).shape == (1, 4, *shape[1:])
    again = mipcandy.build_network("unetr", example_shape=shape, num_classes=4, options=TINY)
    assert again.state_dict().keys() == net.state_dict().keys()  # deterministic in its arguments
    assert all(again.state_dict()[k].shape == v.shape for k, v in net.state_dict().items())


def test_build_options_are_checked() -> None:
    with pytest.raises(ValueError, match="variant '3d' does not fit a 2D input"):
        mipcandy.build_network("unetr", example_shape=(1, 32, 32), num_classes=2, options={"variant": "3d"})
    with pytest.raises(ValueError, match=r"img_size is not an option: the network is built for the patch size "
                                         r"\(32, 32\)"):
        mipcandy.build_network("unetr", example_shape=(1, 32, 32), num_classes=2, options={"img_size": [64, 64]})
    with pytest.raises(ValueError, match=r"image size \(30, 32\) is not a multiple of the patch size 16"):
        mipcandy.build_network("unetr", example_shape=(1, 30, 32), num_classes=2, options=TINY)


def test_optimizer_is_the_papers_adamw_and_takes_overrides() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    default = get_plugin_manager().call("unetr", "build_optimizer", params=params, options={})
    assert type(default) is torch.optim.AdamW
    assert (default.defaults["lr"], default.defaults["weight_decay"]) == (1e-4, 1e-5)
    tuned = get_plugin_manager().call("unetr", "build_optimizer", params=params,
                                      options={"lr": 3e-4, "betas": [0.9, 0.99]})
    assert (tuned.defaults["lr"], tuned.defaults["betas"], tuned.defaults["weight_decay"]) == (3e-4, (0.9, 0.99), 1e-5)
    with pytest.raises(ValueError, match=r"unknown optimizer option\(s\) \['momentum'\]; UNETR trains with AdamW"):
        get_plugin_manager().call("unetr", "build_optimizer", params=params, options={"momentum": 0.9})


def test_candy_plugins_lists_it_without_importing_torch() -> None:
    probe = ("import json, sys; from mipcandy.plugins import load_bundles; "
             "bundles = [[r.name, r.status] for r in load_bundles()]; "
             "print(json.dumps({'bundles': bundles, 'torch': 'torch' in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"bundles": [["unetr", "ok"]], "torch": False}
