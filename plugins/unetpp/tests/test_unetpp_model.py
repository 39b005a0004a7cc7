"""UNet++ forward and backward in 2D and 3D, its deep-supervision heads, padding of odd sizes, option checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import mipcandy
from candy_unetpp.unetpp import make_unetpp2d, make_unetpp3d

TINY = {"features": (4, 8, 16)}  # 3 levels: sizes must be multiples of 4


@pytest.mark.parametrize(("builder", "shape"), [(make_unetpp2d, (2, 16, 24)), (make_unetpp3d, (1, 8, 12, 16))])
def test_forward_backward_reaches_every_weight(builder, shape) -> None:
    net = builder(shape[0], 3, **TINY)
    assert isinstance(net, mipcandy.DeepSupervisedNetwork) and net.deep_supervision is False
    net.set_deep_supervision(True)  # every head in the graph: each weight must get a gradient
    outputs = net(torch.randn(2, *shape))
    sum(o.square().mean() for o in outputs).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


@pytest.mark.parametrize(("builder", "shape"), [(make_unetpp2d, (1, 16, 16)), (make_unetpp3d, (1, 16, 8, 16))])
def test_deep_supervision_returns_every_nested_head_at_full_resolution(builder, shape) -> None:
    net = builder(1, 2, features=(4, 8, 16, 32)).eval()
    x = torch.randn(1, *shape)
    single = net(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 2, *shape[1:])
    net.set_deep_supervision(True)
    heads = net(x)
    # UNet++'s heads X[0,3], X[0,2], X[0,1] all sit at the input's resolution; the final node comes first.
    assert isinstance(heads, list) and [h.shape for h in heads] == [(1, 2, *shape[1:])] * 3
    torch.testing.assert_close(heads[0], single)
    net.set_deep_supervision(False)
    torch.testing.assert_close(net(x), single)


@pytest.mark.parametrize(("pad", "shape"), [(mipcandy.Pad2d, (1, 13, 18)), (mipcandy.Pad3d, (1, 7, 9, 10))])
def test_odd_sizes_through_the_padded_network(pad, shape) -> None:
    builder = make_unetpp2d if len(shape) == 3 else make_unetpp3d
    net = mipcandy.PaddedNetwork(builder(1, 3, **TINY), pad(4))
    out = net(torch.randn(2, *shape))
    assert out.shape == (2, 3, *shape[1:])
    out.mean().backward()
    net.set_deep_supervision(True)
    assert [o.shape for o in net(torch.randn(1, *shape))] == [(1, 3, *shape[1:])] * 2


def test_unpadded_odd_size_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"divisible by 4 .*got \(1, 1, 13, 16\).*PaddedNetwork\(net, mipcandy\.Pad2d"):
        make_unetpp2d(1, 2, **TINY)(torch.zeros(1, 1, 13, 16))


def test_paper_block_is_available_through_descriptors() -> None:
    net = make_unetpp2d(1, 2, features=(4, 8), norm=False, act=mipcandy.LayerT(nn.ELU), dropout=0.5)
    kinds = {type(m) for m in net.modules()}
    assert nn.ELU in kinds and nn.Dropout in kinds and nn.InstanceNorm2d not in kinds
    assert nn.BatchNorm2d in {type(m) for m in make_unetpp2d(1, 2, features=(4, 8), norm=mipcandy.LayerT(
        nn.BatchNorm2d, num_features="in_ch")).modules()}


@pytest.mark.parametrize(("options", "message"), [
    ({"deep_supervision": True}, r"unknown option\(s\) \['deep_supervision'\].*set_deep_supervision"),
    ({"features": (8,)}, "at least 2 levels"),
    ({"features": (8, 0)}, r"features\[1\] must be a positive integer"),
    ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\)"),
    ({"norm": "batch"}, "norm must be a LayerT"),
])
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_unetpp2d(1, 2, **options)
