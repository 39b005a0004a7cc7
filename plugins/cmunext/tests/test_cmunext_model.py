"""The CMUNeXt network: the authors' parameter counts, the paper's layout, shapes, gradients, padding, options."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from candy_cmunext.cmunext import make_cmunext2d
from mipcandy import DeepSupervisedNetwork, LayerT, Pad2d, PaddedNetwork

TINY = {"dims": (4, 8, 8, 16, 16), "depths": (1, 1, 1, 2, 1)}


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Published parameter counts, all for 3 input channels (RGB ultrasound) and 1 output channel (binary lesion mask) at
# 256 x 256 (the count does not depend on the resolution):
# - CMUNeXt 3.14 M: the authors' benchmark table (FengheTan9/Medical-Image-Segmentation-Benchmarks README, BUSI,
#   "Params (M)" 3.14, GFLOPs 7.41) and Table 1 of Tang et al., ISBI 2024;
# - CMUNeXt-S 0.41 M: Tang et al. (arXiv 2308.01239), "CMUNeXt-S ... 0.41M params";
# - CMUNeXt-L: the authors' params-vs-IoU figure (FengheTan9/CMUNeXt imgs/Params.png) places it at about 8.3 M.
# The tolerance covers the two-decimal rounding of the tables (0.01 M) and, for the figure, reading a plot (0.1 M).
@pytest.mark.parametrize(("variant", "published", "tolerance"), [
    ("CMUNeXt-S", 0.41e6, 0.01e6), ("CMUNeXt", 3.14e6, 0.01e6), ("CMUNeXt-L", 8.3e6, 0.1e6)])
def test_parameter_counts_match_the_published_ones(variant, published, tolerance) -> None:
    assert num_params(make_cmunext2d(3, 1, variant=variant)) == pytest.approx(published, abs=tolerance)


# The paper's variants (Section 2 / the authors' cmunext_s, cmunext, cmunext_l): depthwise kernels and blocks per stage.
@pytest.mark.parametrize(("variant", "kernels", "depths"), [
    ("cmunext-s", (3, 3, 7, 7, 9), (1, 1, 1, 1, 1)), ("CMUNeXt", (3, 3, 7, 7, 7), (1, 1, 1, 3, 1)),
    ("CMUNeXt-L", (3, 3, 7, 7, 7), (1, 1, 1, 6, 3))])
def test_large_kernel_depthwise_blocks_per_stage(variant, kernels, depths) -> None:
    model = make_cmunext2d(3, 1, variant=variant)
    for stage, kernel, depth in zip(model.encoder, kernels, depths, strict=True):
        depthwise = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
        assert [m.kernel_size for m in depthwise] == [(kernel, kernel)] * depth


def test_skip_fusion_convolves_each_half_on_its_own() -> None:
    model = make_cmunext2d(1, 2, **TINY)
    grouped = [f.grouped[0] for f in model.fusions]
    assert [(c.in_channels, c.groups, c.kernel_size) for c in grouped] == [(32, 2, (3, 3)), (16, 2, (3, 3)),
                                                                          (16, 2, (3, 3)), (8, 2, (3, 3))]


@pytest.mark.parametrize("variant", ["CMUNeXt-S", "CMUNeXt", "CMUNeXt-L"])
def test_forward_and_backward(variant) -> None:
    torch.manual_seed(0)
    model = make_cmunext2d(2, 3, variant=variant)
    x = torch.randn(2, 2, 32, 48)
    out = model(x)
    assert out.shape == (2, 3, 32, 48)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert not isinstance(model, DeepSupervisedNetwork)  # the architecture has no deep-supervision heads


@pytest.mark.parametrize("spatial", [(23, 37), (17, 16), (5, 9)])
def test_odd_sizes_through_padded_network(spatial) -> None:
    model = make_cmunext2d(1, 2, **TINY)
    with pytest.raises(ValueError, match=r"multiples of 16.*PaddedNetwork\(net, Pad2d\(16\)\)"):
        model(torch.zeros(1, 1, *spatial))
    padded = PaddedNetwork(model, Pad2d(model.divisibility))
    x = torch.randn(2, 1, *spatial, requires_grad=True)  # 2 cases: BatchNorm trains on the 1x1 bottleneck of 5x9
    out = padded(x)
    assert out.shape == (2, 2, *spatial)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_norm_and_activations_are_swappable() -> None:
    model = make_cmunext2d(1, 2, **TINY, norm=LayerT(nn.GroupNorm, num_groups=2, num_channels="in_ch"),
                           act=LayerT(nn.SiLU), conv_act=LayerT(nn.LeakyReLU, negative_slope=0.1))
    kinds = {type(m) for m in model.modules()}
    assert {nn.GroupNorm, nn.SiLU, nn.LeakyReLU} <= kinds
    assert not kinds & {nn.BatchNorm2d, nn.GELU, nn.ReLU}
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_custom_depth_changes_divisibility() -> None:
    model = make_cmunext2d(1, 1, dims=(4, 8, 16), depths=(1, 1, 1), kernels=(3, 5, 7))
    assert model.divisibility == 4
    assert model(torch.zeros(1, 1, 12, 20)).shape == (1, 1, 12, 20)


@pytest.mark.parametrize(("options", "message"), [
    ({"variant": "XL"}, r"unknown variant 'XL'; the variants are \['CMUNeXt-S', 'CMUNeXt', 'CMUNeXt-L'\]"),
    ({"depth": 3}, r"unknown option\(s\) \['depth'\]; the options are variant, dims"),
    ({"kernels": (3, 3, 7, 7, 8)}, "kernels must be odd"),
    ({"depths": (1, 1, 1)}, r"depths needs one entry per stage \(5, as many as dims\)"),
    ({"dims": (16,)}, "at least 2 stages"),
    ({"dims": (16, 0, 8)}, "dims must hold positive integers"),
    ({"norm": "batch"}, "norm must be a mipcandy.LayerT"),
])
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_cmunext2d(1, 2, **options)
