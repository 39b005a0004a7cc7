"""The V-Net's layout against MONAI's VNet and the paper; shapes, padding and options."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import VNet as MonaiVNet
from torch import nn

from candy_vnet.vnet import make_vnet3d
from mipcandy import LayerT, Pad3d, PaddedNetwork

MONAI_LAYOUT = {"down_convs": (1, 2, 3, 2), "up_convs": (2, 2, 1, 1), "act": "elu"}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_monai_layout_has_monai_vnet_parameter_count() -> None:
    # MONAI's VNet() (spatial_dims=3, in_channels=1, out_channels=1: 45.6 M) keeps 1/2/3/2 convs down and 2/2/1/1
    # up, ELU and BatchNorm. Its transposed up-convs carry a bias before their BatchNorm; ours leave out that
    # redundant bias (16 + 32 + 64 + 128 weights), the only difference.
    with torch.device("meta"):  # counts need no weights
        reference = MonaiVNet(spatial_dims=3, in_channels=1, out_channels=1)
        ours = make_vnet3d(1, 1, **MONAI_LAYOUT)
    assert count(ours) == pytest.approx(count(reference), rel=0.01)
    assert count(reference) - count(ours) == 16 + 32 + 64 + 128


def test_paper_layout_adds_a_256_channel_conv_to_the_bottom_and_the_first_up_stage() -> None:
    # The paper (and the authors' prototxt) use 3 convs in the 256-channel down stage and in the first up stage,
    # MONAI 2: each extra unit is a 5x5x5 256->256 conv (no bias, BatchNorm follows) and its BatchNorm.
    with torch.device("meta"):
        paper, monai_layout = make_vnet3d(1, 1, act="elu"), make_vnet3d(1, 1, **MONAI_LAYOUT)
    unit = 256 * 256 * 5 ** 3 + 2 * 256
    assert count(paper) - count(monai_layout) == 2 * unit


def test_odd_sizes_run_forward_and_backward_through_padding() -> None:
    net = PaddedNetwork(make_vnet3d(3, 4, base_ch=4), Pad3d(16))
    x = torch.randn(2, 3, 9, 18, 13, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 4, 9, 18, 13)
    out.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_unpadded_input_must_be_divisible() -> None:
    net = make_vnet3d(1, 2, base_ch=2, down_convs=(1, 1), up_convs=(1, 1))
    assert net(torch.zeros(2, 1, 8, 4, 12)).shape == (2, 2, 8, 4, 12)  # two down stages: multiples of 4
    with pytest.raises(ValueError, match=r"divisible by 4.*Pad3d\(4\)"):
        net(torch.zeros(2, 1, 8, 4, 10))


def test_activation_and_normalisation_are_swappable() -> None:
    paper = make_vnet3d(1, 2, base_ch=2)
    assert any(isinstance(m, nn.PReLU) for m in paper.modules()) and not any(
        isinstance(m, nn.ELU) for m in paper.modules())
    elu = make_vnet3d(1, 2, base_ch=2, act="ELU")
    assert any(isinstance(m, nn.ELU) for m in elu.modules()) and not any(
        isinstance(m, nn.PReLU) for m in elu.modules())
    plain = make_vnet3d(1, 2, base_ch=2, norm=False)
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    assert not any(isinstance(m, nn.BatchNorm3d) for m in plain.modules())
    assert all(m.bias is not None for m in convs)  # the paper's convs have biases when nothing normalises them
    instance = make_vnet3d(1, 2, base_ch=2, norm=LayerT(nn.InstanceNorm3d, num_features="in_ch", affine=True))
    norms = [m for m in instance.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and not any(isinstance(m, nn.BatchNorm3d) for m in instance.modules())


@pytest.mark.parametrize(("options", "message"), [
    ({"depth": 3}, r"unknown option\(s\) \['depth'\]"),
    ({"act": "relu"}, "act must be one of"),
    ({"up_convs": (1, 1)}, "up_convs needs one entry per down stage"),
    ({"down_convs": (1, 0, 1, 1)}, "down_convs must list one positive number"),
    ({"base_ch": 0}, "base_ch must be a positive integer"),
    ({"norm": "batch"}, "norm must be a LayerT"),
])
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_vnet3d(1, 2, **options)
