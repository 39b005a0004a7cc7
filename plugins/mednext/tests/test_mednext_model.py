"""MedNeXt against the paper's parameter table and MONAI's MedNeXt; deep supervision, padding and options."""
from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import MedNeXt as MonaiMedNeXt
from monai.networks.nets.mednext import create_mednext
from torch import nn

from candy_mednext.mednext import make_mednext2d, make_mednext3d
from mipcandy import DeepSupervisedNetwork, LayerT, Pad2d, Pad3d, PaddedNetwork

# MedNeXt paper (Roy et al., MICCAI 2023), Table 1, repeated in the official README (MIC-DKFZ/MedNeXt): parameters
# in millions of the 3D networks with 1 input channel and 32 base channels, kernel 3 / kernel 5. The class count
# only changes the 1x1 heads (33 weights per class and head), far below the table's rounding; the official
# examples (README, create_mednext_v1.py) use 3 classes, as here.
PUBLISHED_MILLIONS = {("S", 3): 5.6, ("S", 5): 5.9, ("B", 3): 10.5, ("B", 5): 11.0, ("M", 3): 17.6, ("M", 5): 18.3,
                      ("L", 3): 61.8, ("L", 5): 63.0}
# The paper's expansion ratios per level (encoder 0-3, bottleneck, decoder 3-0), to explain MONAI's counts.
EXPANSION = {"S": (2,) * 9, "B": (2, 3, 4, 4, 4, 4, 4, 3, 2), "M": (2, 3, 4, 4, 4, 4, 4, 3, 2),
             "L": (3, 4, 8, 8, 8, 8, 8, 4, 3)}
TINY = {"base_ch": 4, "exp_r": 2, "block_counts": 1}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("variant", "kernel_size"), sorted(PUBLISHED_MILLIONS))
def test_parameter_counts_match_the_paper(variant, kernel_size) -> None:
    with torch.device("meta"):
        net = make_mednext3d(1, 3, variant=variant, kernel_size=kernel_size)
    assert count(net) / 1e6 == pytest.approx(PUBLISHED_MILLIONS[variant, kernel_size], rel=0.02)


@pytest.mark.parametrize("variant", ["S", "B", "M", "L"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_parameter_counts_against_monai(variant, ndim) -> None:
    with torch.device("meta"):
        ours = (make_mednext2d if ndim == 2 else make_mednext3d)(1, 3, variant=variant, kernel_size=5)
        reference = create_mednext(variant, spatial_dims=ndim, in_channels=1, out_channels=3, kernel_size=5,
                                   deep_supervision=True)
    # The paper's down block into level l expands by level l's ratio (official MedNextV1.py: down_0 uses exp_r[1]);
    # MONAI's uses the ratio of the level it leaves. Each unit of ratio costs the down block's 1x1 expansion
    # (c -> c, with bias) and compression (c -> 2c) weights; with equal ratios (S) the networks are the same.
    ratios = EXPANSION[variant]
    difference = sum((ratios[level + 1] - ratios[level]) * (c * c + c + c * 2 * c)
                     for level, c in enumerate(32 * 2 ** i for i in range(4)))
    assert count(ours) - count(reference) == difference
    assert (difference == 0) == (variant == "S")


def monai_key(key: str) -> str:
    """Our weight name -> MONAI MedNeXt's."""
    parts = key.split(".")
    if parts[0] == "heads":
        head = int(parts[1])
        return f"out_0.conv_out.{parts[2]}" if head == 0 else f"out_blocks.{4 - head}.conv_out.{parts[2]}"
    if parts[0] == "stem":
        return key
    top = {"encoder": "enc_stages", "down": "down_blocks", "up": "up_blocks", "decoder": "dec_stages"}
    block = {"depthwise": "conv1", "norm": "norm", "expand": "conv2", "compress": "conv3", "shortcut": "res_conv"}
    return ".".join([top.get(parts[0], parts[0]), *parts[1:-2], block[parts[-2]], parts[-1]])


@pytest.mark.parametrize(("ndim", "shape"), [(2, (32, 48)), (3, (16, 32, 16))])
def test_outputs_equal_monai_with_the_same_weights(ndim, shape) -> None:
    torch.manual_seed(0)
    reference = MonaiMedNeXt(spatial_dims=ndim, init_filters=4, in_channels=2, out_channels=3, kernel_size=3,
                             deep_supervision=True, use_residual_connection=True, blocks_down=(1, 2, 1, 1),
                             blocks_bottleneck=2, blocks_up=(1, 1, 2, 1), encoder_expansion_ratio=2,
                             decoder_expansion_ratio=2, bottleneck_expansion_ratio=2)
    ours = (make_mednext2d if ndim == 2 else make_mednext3d)(2, 3, base_ch=4, exp_r=2,
                                                             block_counts=(1, 2, 1, 1, 2, 1, 1, 2, 1))
    weights = reference.state_dict()
    state = {}
    for key in ours.state_dict():
        weight = weights[monai_key(key)]
        # MONAI's heads are 1x1 transposed convs: (in, out, 1...) instead of a conv's (out, in, 1...)
        state[key] = weight.transpose(0, 1) if key.startswith("heads.") and key.endswith("weight") else weight
    ours.load_state_dict(state)
    ours.set_deep_supervision(True)
    x = torch.randn(2, 2, *shape)
    expected = reference.train()(x)  # MONAI returns the deep-supervision outputs in training mode
    outputs = ours(x)
    assert len(outputs) == len(expected) == 5
    for a, b in zip(outputs, expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("ndim", "spatial"), [(2, (37, 21)), (3, (13, 21, 9))])
def test_odd_sizes_with_deep_supervision_through_padding(ndim, spatial) -> None:
    builder, pad = (make_mednext2d, Pad2d) if ndim == 2 else (make_mednext3d, Pad3d)
    net = builder(3, 2, **TINY)
    assert isinstance(net, DeepSupervisedNetwork) and not net.deep_supervision  # built with deep supervision off
    padded = PaddedNetwork(net, pad(16))
    x = torch.randn(2, 3, *spatial, requires_grad=True)
    assert padded(x).shape == (2, 2, *spatial)
    padded.set_deep_supervision(True)
    outputs = padded(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [tuple(math.ceil(s / 2 ** i) for s in spatial)
                                                     for i in range(5)]
    sum(o.square().mean() for o in outputs).backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_unpadded_input_must_be_divisible() -> None:
    net = make_mednext2d(1, 2, **TINY)
    with pytest.raises(ValueError, match=r"divisible by 16.*Pad2d\(16\)"):
        net(torch.zeros(1, 1, 16, 24))


def test_gradient_checkpointing_changes_memory_not_results() -> None:
    torch.manual_seed(0)
    plain = make_mednext2d(1, 2, **TINY)
    checkpointed = make_mednext2d(1, 2, **TINY, gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    calls = {"plain": 0, "checkpointed": 0}

    def counter(name: str):
        return lambda *_: calls.__setitem__(name, calls[name] + 1)

    plain.encoder[0][0].depthwise.register_forward_hook(counter("plain"))
    checkpointed.encoder[0][0].depthwise.register_forward_hook(counter("checkpointed"))
    x = torch.randn(2, 1, 32, 16)
    plain(x).square().mean().backward()
    checkpointed(x).square().mean().backward()
    assert calls == {"plain": 1, "checkpointed": 2}  # recomputed in the backward pass
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.device("meta"):  # the official recipe checkpoints M and L
        assert [make_mednext3d(1, 2, variant=v).checkpointing for v in "SBML"] == [False, False, True, True]


def test_norm_and_activation_are_swappable() -> None:
    net = make_mednext2d(1, 2, **TINY, norm=LayerT(nn.InstanceNorm2d, num_features="in_ch", affine=True),
                         act=LayerT(nn.SiLU))
    kinds = {type(m) for m in net.modules()}
    assert {nn.InstanceNorm2d, nn.SiLU} <= kinds and not {nn.GroupNorm, nn.GELU} & kinds
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize(("options", "message"), [
    ({"variant": "XL"}, r"variant must be one of \['S', 'B', 'M', 'L'\]"),
    ({"kernel_size": 4}, "kernel_size must be odd"),
    ({"exp_r": (2, 2)}, "exp_r must be an int or 9 ints"),
    ({"block_counts": -1}, r"block_counts\[0\] must be an integer >= 0"),
    ({"deep_supervision": True}, r"unknown option\(s\) \['deep_supervision'\]"),
    ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be True, False or None"),
])
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_mednext3d(1, 2, **options)
