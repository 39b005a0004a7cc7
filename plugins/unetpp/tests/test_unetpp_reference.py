"""UNet++ against published and independent numbers: the paper's parameter count and MONAI's BasicUNetPlusPlus."""
from __future__ import annotations

import re

import pytest
import torch
from monai.networks.nets import BasicUNetPlusPlus
from torch import nn

from candy_unetpp.unetpp import make_unetpp2d, make_unetpp3d
from mipcandy import LayerT

# Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation" (DLMIA 2018), Table 2: UNet++
# has 9.04M parameters (with and without deep supervision) in its 2D configuration of Table 1 (kernels 32, 64,
# 128, 256, 512; 1 input channel; one sigmoid output). The authors' Keras code (MrGiovanni/UNetPlusPlus, model.py,
# Nest_Net) counts exactly 9,041,601 with one head: two 3x3 convs (bias, ELU, dropout) per node, 2x2 transposed
# convs with bias. Three more 1x1 deep-supervision heads add 3 x (32 + 1).
PAPER_PARAMS = 9.04e6
AUTHORS_PARAMS = 9_041_601 + 3 * 33


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_the_paper_configuration_has_the_published_parameter_count() -> None:
    paper = make_unetpp2d(1, 1, norm=False, act=LayerT(nn.ELU), dropout=0.5)
    assert count(paper) == AUTHORS_PARAMS
    assert abs(count(paper) - PAPER_PARAMS) / PAPER_PARAMS < 5e-4  # the table rounds to 0.01M
    # The default block adds affine InstanceNorms (2 x 3,648 channels) and stays within 0.1% of the paper.
    assert abs(count(make_unetpp2d(1, 1)) - PAPER_PARAMS) / PAPER_PARAMS < 1e-3


def monai_to_ours(name: str) -> str:
    """MONAI's parameter name for the same weight in our module tree."""
    if match := re.fullmatch(r"(?:conv|upcat)_(\d)_(\d)\.(?:convs\.)?conv_(\d)\.(conv|adn\.N)\.(weight|bias)", name):
        level, column, index, part, kind = match.groups()
        return f"nodes.{level}_{column}.{index}.{'conv' if part == 'conv' else 'norm'}.{kind}"
    if match := re.fullmatch(r"upcat_(\d)_(\d)\.upsample\.deconv\.(weight|bias)", name):
        return f"ups.{match[1]}_{match[2]}.{match[3]}"
    if match := re.fullmatch(r"final_conv_0_(\d)\.(weight|bias)", name):
        return f"heads.{int(match[1]) - 1}.{match[2]}"
    raise AssertionError(f"unexpected MONAI parameter {name}")


@pytest.mark.parametrize(("dims", "builder", "shape"), [(2, make_unetpp2d, (2, 32, 16)),
                                                         (3, make_unetpp3d, (1, 32, 16, 16))])
def test_matches_monai_basic_unetplusplus_weight_for_weight(dims, builder, shape) -> None:
    """MONAI's BasicUNetPlusPlus is the paper's UNet++ when its first two widths are equal (its top upsampling keeps
    the second level's width; ours narrows to the first's, as the paper does): then the weights transfer one to one
    and every head agrees."""
    torch.manual_seed(0)
    features = (4, 4, 8, 16, 32)
    reference = BasicUNetPlusPlus(dims, shape[0], 3, features=(*features, features[0]), deep_supervision=True,
                                  act=("LeakyReLU", {"negative_slope": 0.1}), norm=("instance", {"affine": True}))
    ours = builder(shape[0], 3, features=features, act=LayerT(nn.LeakyReLU, negative_slope=0.1))
    assert count(ours) == count(reference)
    ours.load_state_dict({monai_to_ours(k): v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(2, *shape)
    reference.eval(), ours.eval()
    with torch.no_grad():
        expected = reference(x)  # heads X[0,1] ... X[0,4]
        ours.set_deep_supervision(True)
        got = ours(x)  # X[0,4] first
        for a, b in zip(got, reversed(expected), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        ours.set_deep_supervision(False)
        torch.testing.assert_close(ours(x), expected[-1], rtol=1e-4, atol=1e-5)


def test_monai_default_size_matches_ours() -> None:
    """MONAI's default 3D UNet++ (widths 32, 32, 64, 128, 256) and ours with those widths have one parameter count."""
    reference = BasicUNetPlusPlus(3, 1, 2, deep_supervision=True, act=("LeakyReLU", {"negative_slope": 0.1}))
    assert count(make_unetpp3d(1, 2, features=(32, 32, 64, 128, 256))) == count(reference)
