"""The bridge's checks and plans: network names, options against MONAI's signatures, DynUNet's nnU-Net topology."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from unittest import mock

import pytest
from monai.networks import nets

import mipcandy
from candy_monai import hooks
from candy_monai.bridge import RECIPES, build_monai_network
from candy_monai.planning import plan_dynunet
from mipcandy.plugins import get_plugin_manager, reset_plugin_manager


@pytest.fixture(autouse=True)
def _fresh_manager(monkeypatch):
    for name in ("CANDY_PLUGINS", "CANDY_DISABLED_PLUGINS", "CANDY_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    reset_plugin_manager()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    reset_plugin_manager()


def test_discovered_with_metadata() -> None:
    record = get_plugin_manager().require("monai")
    assert (record.distribution, record.module) == ("candy-monai", "candy_monai.hooks")
    assert record.hooks == ["build_network", "bundle_info"]
    assert record.info["dimensions"] == [2, 3]
    assert record.info["variants"] == ["SegResNet", "SwinUNETR", "DynUNet", "AttentionUnet", "BasicUNetPlusPlus"]
    assert list(RECIPES) == list(hooks.NETWORKS)


def test_discovery_imports_neither_torch_nor_monai() -> None:
    code = ("import sys, json; from mipcandy.plugins import load_bundles; "
            "print(json.dumps([[r.name, r.status] for r in load_bundles()]), "
            "'torch' in sys.modules or 'monai' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    listed, heavy_loaded = result.stdout.rsplit(" ", 1)
    assert ["monai", "ok"] in json.loads(listed) and heavy_loaded.strip() == "False"


SUPPORTED = r"\['SegResNet', 'SwinUNETR', 'DynUNet', 'AttentionUnet', 'BasicUNetPlusPlus'\]"


@pytest.mark.parametrize(("options", "message"), [
    ({}, "no network option; choose one with network=NAME, the supported networks are " + SUPPORTED),
    ({"network": "UNETR"}, "unknown network 'UNETR'; .* supported networks are " + SUPPORTED),
    ({"network": "segresnet"}, "unknown network 'segresnet'"),
])
def test_network_must_be_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        mipcandy.build_network("monai", example_shape=(1, 32, 32), num_classes=2, options=options)


def test_unknown_options_list_the_accepted_ones_before_building() -> None:
    with mock.patch.object(nets.SegResNet, "__init__", autospec=True, side_effect=AssertionError("built")) as init:
        with pytest.raises(ValueError, match=r"SegResNet does not accept \['filters'\]; its options are \[") as error:
            build_monai_network((1, 32, 32), 2, {"network": "SegResNet", "filters": [8, 16]})
        init.assert_not_called()
    accepted = str(error.value).split("its options are ")[1]
    assert "'init_filters'" in accepted and "'blocks_down'" in accepted and "'in_channels'" not in accepted


@pytest.mark.parametrize(("network", "option"), [("SegResNet", "in_channels"), ("SwinUNETR", "spatial_dims"),
                                                 ("DynUNet", "deep_supervision"), ("AttentionUnet", "out_channels"),
                                                 ("BasicUNetPlusPlus", "deep_supervision")])
def test_what_the_bridge_sets_is_not_an_option(network, option) -> None:
    with pytest.raises(ValueError, match=rf"{network}'s \['{option}'\] are set by the bridge"):
        build_monai_network((1, 32, 32), 2, {"network": network, option: 1})


def test_values_monai_rejects_are_reported_with_the_arguments() -> None:
    with pytest.raises(ValueError, match=r"SwinUNETR rejected the arguments .*'feature_size': 20.*divisible by 12"):
        build_monai_network((1, 32, 32), 2, {"network": "SwinUNETR", "feature_size": 20})


@pytest.mark.parametrize("shape", [(1, 32), (1, 2, 3, 4, 5), (0, 32, 32)])
def test_input_shape_is_checked(shape) -> None:
    with pytest.raises(ValueError, match=r"expected an input shaped \(C, H, W\) or \(C, D, H, W\)"):
        build_monai_network(shape, 2, {"network": "SegResNet"})


def test_img_size_comes_from_the_shape_where_monai_still_takes_it(monkeypatch) -> None:
    """MONAI < 1.5 sizes SwinUNETR for the input (``img_size``); emulate that signature on the installed class."""

    class SizedSwinUNETR(nets.SwinUNETR):
        def __init__(self, img_size, in_channels, out_channels, feature_size=24, spatial_dims=3) -> None:
            super().__init__(in_channels, out_channels, feature_size=feature_size, spatial_dims=spatial_dims)
            self.img_size = img_size

    monkeypatch.setattr(nets, "SwinUNETR", SizedSwinUNETR)
    net = build_monai_network((1, 64, 32), 2, {"network": "SwinUNETR", "feature_size": 12})
    assert isinstance(net, SizedSwinUNETR) and tuple(net.img_size) == (64, 32)
    with pytest.raises(ValueError, match=r"\['img_size'\] are set by the bridge"):
        build_monai_network((1, 64, 32), 2, {"network": "SwinUNETR", "img_size": [64, 32]})


# nnU-Net's own planner is the reference: get_pool_and_conv_props(spacing, patch, min feature map 4, no pooling cap)
# with isotropic spacing, as nnU-Net v2's ExperimentPlanner calls it.
@pytest.mark.parametrize("patch", [(32, 32), (64, 16), (40, 24), (8, 64), (512, 512), (128, 128, 128),
                                   (80, 192, 160), (48, 48, 48), (20, 320, 256), (16, 16, 96)])
def test_dynunet_plan_matches_nnunet(patch) -> None:
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pools, kernels, padded_patch, _ = get_pool_and_conv_props([1.0] * len(patch), patch, 4, 999999)
    plan = plan_dynunet(patch)
    assert plan["strides"] == [list(p) for p in pools]
    assert plan["kernel_size"] == [list(k) for k in kernels]
    assert plan["upsample_kernel_size"] == [list(p) for p in pools[1:]]
    assert tuple(int(s) for s in padded_patch) == patch  # none of these patches needs padding


def test_dynunet_plan_needs_two_downsamplings() -> None:
    with pytest.raises(ValueError, match=r"\(12, 12\) voxels leaves room for 1 downsampling\(s\), and DynUNet needs"):
        plan_dynunet((12, 12))


def test_dynunet_options_win_over_the_plan() -> None:
    net = build_monai_network((1, 64, 64), 2, {"network": "DynUNet", "strides": [1, 2, 2],
                                               "deep_supr_num": 1})
    assert net.network.strides == [1, 2, 2] and net.network.kernel_size == [[3, 3]] * 3
    assert net.network.upsample_kernel_size == [2, 2] and net.network.deep_supr_num == 1
