"""UNETR forward and backward in 2D and 3D, the fixed image size, padding of odd sizes and option checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import mipcandy
from candy_unetr.unetr import make_unetr2d, make_unetr3d

TINY = {"hidden_size": 16, "mlp_dim": 32, "num_heads": 2, "num_layers": 4, "feature_size": 4}


@pytest.mark.parametrize(("builder", "shape"), [(make_unetr2d, (2, 32, 48)), (make_unetr3d, (1, 16, 32, 16))])
def test_forward_backward_reaches_every_weight(builder, shape) -> None:
    net = builder(shape[0], 3, img_size=shape[1:], **TINY)
    out = net(torch.randn(2, *shape))
    assert out.shape == (2, 3, *shape[1:])
    out.square().mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


def test_skips_leave_the_transformer_after_layers_3_6_9_and_12() -> None:
    """The paper's z3, z6, z9 and z12 (1-based), whatever the widths."""
    net = make_unetr2d(1, 2, img_size=(32, 32), hidden_size=16, mlp_dim=32, num_heads=2, feature_size=4)
    assert net.vit.taps == (3, 6, 9, 12) and len(net.vit.layers) == 12


def test_odd_sizes_are_padded_to_the_built_size() -> None:
    net = make_unetr2d(1, 3, img_size=(32, 48), **TINY)
    padded = mipcandy.PaddedNetwork(net, mipcandy.PadTo(net.img_size))
    out = padded(torch.randn(2, 1, 27, 45))
    assert out.shape == (2, 3, 27, 45)
    out.mean().backward()
    # Pad2d(16) fits too when the input rounds up to the built size.
    assert mipcandy.PaddedNetwork(net, mipcandy.Pad2d(16))(torch.randn(1, 1, 17, 33)).shape == (1, 3, 17, 33)


def test_another_size_is_refused_with_the_fix() -> None:
    net = make_unetr3d(1, 2, img_size=(16, 32, 32), **TINY)
    with pytest.raises(ValueError, match=r"built for inputs shaped \(B, 1, 16, 32, 32\): its position embedding fixes "
                                         r"the grid.*Got \(1, 1, 32, 32, 32\).*PadTo\(\(16, 32, 32\)\)"):
        net(torch.zeros(1, 1, 32, 32, 32))


def test_sizes_off_the_patch_grid_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"image size \(40, 64, 70\) is not a multiple of the patch size 16.*"
                                         r"\(48, 64, 80\).*PaddedNetwork\(net, mipcandy\.Pad3d\(16\)\)"):
        make_unetr3d(1, 2, img_size=(40, 64, 70), **TINY)


@pytest.mark.parametrize(("options", "message"), [
    ({"patch_size": 8}, r"unknown option\(s\) \['patch_size'\]; the options are hidden_size"),
    ({"num_heads": 3}, "hidden_size 16 must be divisible by num_heads 3"),
    ({"num_layers": 6}, "num_layers must be a multiple of 4"),
    ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\)"),
    ({"feature_size": 0}, "feature_size must be a positive integer"),
    ({"qkv_bias": 1}, "qkv_bias must be True or False"),
    ({"act": "relu"}, "act must be a LayerT"),
])
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_unetr2d(1, 2, img_size=(32, 32), **{**TINY, **options})


def test_decoder_layers_are_swappable() -> None:
    net = make_unetr2d(1, 2, img_size=(32, 32), **TINY,
                       norm=mipcandy.LayerT(nn.BatchNorm2d, num_features="in_ch"), act=mipcandy.LayerT(nn.GELU))
    kinds = {type(m) for m in net.modules()}
    assert nn.BatchNorm2d in kinds and nn.InstanceNorm2d not in kinds and nn.LeakyReLU not in kinds
