"""Each bridged MONAI network, 2D and 3D: forward and backward, equality with the MONAI class, padding, heads."""
from __future__ import annotations

import warnings

import pytest
import torch
from monai.networks import nets
from torch import nn

import mipcandy
from candy_monai.bridge import build_monai_network
from mipcandy import DeepSupervisedNetwork, Pad2d, PaddedNetwork

TINY = {
    "SegResNet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
    # batch norm: at a 32-voxel patch SwinUNETR's bottleneck is 1 voxel, which instance norm cannot train on
    "SwinUNETR": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "norm_name": "batch"},
    "DynUNet": {"filters": [4, 8, 8, 16, 16]},
    "AttentionUnet": {"channels": [4, 8, 16], "strides": [2, 2]},
    "BasicUNetPlusPlus": {"features": [4, 4, 8, 8, 16, 4]},
}
WITH_HEADS = {"DynUNet", "BasicUNetPlusPlus"}


@pytest.fixture(autouse=True)
def _quiet_monai():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notices about its own defaults
        yield


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("shape", [(2, 32, 32), (1, 16, 32, 32)], ids=["2d", "3d"])
def test_forward_and_backward(name, shape) -> None:
    torch.manual_seed(0)
    net = build_monai_network(shape, 3, {"network": name, **TINY[name]})
    inner = net.network if isinstance(net, PaddedNetwork) else net  # SwinUNETR pads 16 voxels to its 32
    assert isinstance(inner, DeepSupervisedNetwork) is (name in WITH_HEADS)
    x = torch.randn(2, *shape)
    out = net(x)
    assert out.shape == (2, 3, *shape[1:])
    loss = out.square().mean()
    if name in WITH_HEADS:  # the heads train only with deep supervision on
        net.set_deep_supervision(True)
        loss = loss + sum(o.square().mean() for o in net(x))
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


# What the bridge must pass to MONAI for a (2, 32, 32) input and 3 classes, written out by hand from the rules in
# the bridge's documentation (DynUNet: nnU-Net's plan for 32 x 32 halves both axes 3 times, down to 4 x 4; all
# decoder levels but the lowest are heads).
REFERENCES = {
    "SegResNet": lambda: nets.SegResNet(spatial_dims=2, in_channels=2, out_channels=3, **TINY["SegResNet"]),
    "SwinUNETR": lambda: nets.SwinUNETR(in_channels=2, out_channels=3, spatial_dims=2, **TINY["SwinUNETR"]),
    "DynUNet": lambda: nets.DynUNet(2, 2, 3, kernel_size=[[3, 3]] * 4, strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
                                    upsample_kernel_size=[[2, 2]] * 3, filters=[4, 8, 8, 16],
                                    deep_supervision=True, deep_supr_num=2),
    "AttentionUnet": lambda: nets.AttentionUnet(2, 2, 3, channels=[4, 8, 16], strides=[2, 2]),
    "BasicUNetPlusPlus": lambda: nets.BasicUNetPlusPlus(2, 2, 3, features=[4, 4, 8, 8, 16, 4]),
}


@pytest.mark.parametrize("name", TINY)
def test_equals_the_monai_class_with_the_same_arguments(name) -> None:
    torch.manual_seed(0)
    ours = build_monai_network((2, 32, 32), 3, {"network": name, **TINY[name]})
    inner = ours.network if name in WITH_HEADS else ours
    reference = REFERENCES[name]()
    assert type(inner) is type(reference)
    assert num_params(ours) == num_params(reference)
    reference.load_state_dict(inner.state_dict())
    ours.eval(), reference.eval()
    x = torch.randn(2, 2, 32, 32)
    expected = reference(x)
    expected = expected[0] if isinstance(expected, list) else expected  # UNet++ returns a list of one
    torch.testing.assert_close(ours(x), expected)


def test_attention_unet_default_channels() -> None:
    ours = build_monai_network((1, 32, 32), 2, {"network": "AttentionUnet"})
    reference = nets.AttentionUnet(2, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2))
    assert num_params(ours) == num_params(reference)


@pytest.mark.parametrize("name", TINY)
def test_odd_sizes_through_padded_network(name) -> None:
    net = build_monai_network((1, 32, 32), 2, {"network": name, **TINY[name]})
    padded = PaddedNetwork(net, Pad2d(32))
    x = torch.randn(2, 1, 23, 37, requires_grad=True)
    out = padded(x)
    assert out.shape == (2, 2, 23, 37)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "heads"), [("DynUNet", 3), ("BasicUNetPlusPlus", 4)])
def test_deep_supervision_heads(name, heads) -> None:
    """DynUNet 32x32 has 4 stages: its output and 2 heads; UNet++ has 4 nested outputs. MONAI keeps all at full
    resolution; the final output comes first, and switching off returns to it alone."""
    torch.manual_seed(0)
    net = PaddedNetwork(build_monai_network((1, 32, 32), 2, {"network": name, **TINY[name]}), Pad2d(16))
    x = torch.randn(2, 1, 25, 30)
    single = net(x)
    net.set_deep_supervision(True)
    outputs = net(x)
    assert isinstance(outputs, list) and [o.shape for o in outputs] == [(2, 2, 25, 30)] * heads
    torch.testing.assert_close(outputs[0], single)
    sum(o.mean() for o in outputs).backward()
    net.set_deep_supervision(False)
    assert isinstance(net(x), torch.Tensor)


def test_networks_without_heads_refuse_deep_supervision() -> None:
    net = PaddedNetwork(build_monai_network((1, 32, 32), 2, {"network": "SegResNet"}), Pad2d(16))
    with pytest.raises(TypeError, match="SegResNet has no deep-supervision heads"):
        net.set_deep_supervision(True)


def test_a_patch_off_the_networks_multiple_gets_padded() -> None:
    net = mipcandy.build_network("monai", example_shape=(1, 48, 48), num_classes=2,
                                 options={"network": "SwinUNETR", **TINY["SwinUNETR"]})
    assert isinstance(net, PaddedNetwork) and isinstance(net.network, nets.SwinUNETR)
    assert net.padding.min_factor == (32, 32)
    assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 2, 48, 48)
    fits = mipcandy.build_network("monai", example_shape=(1, 64, 64), num_classes=2,
                                  options={"network": "SwinUNETR", **TINY["SwinUNETR"]})
    assert isinstance(fits, nets.SwinUNETR)
