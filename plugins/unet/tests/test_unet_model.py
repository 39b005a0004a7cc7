"""The candy-unet network: nnU-Net parameter counts, parity with dynamic-network-architectures, shapes, options."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from candy_unet.unet import UNet, make_unet2d, make_unet3d
from mipcandy.layer import LayerT

SMALL_2D = (4, 8, 16)
SMALL_3D = (4, 8, 16)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def modules_of(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def dna_unet():
    """dynamic-network-architectures' unet module, or skip (it may pull in a broken timm/torchvision)."""
    try:
        from dynamic_network_architectures.architectures import unet
    except Exception as error:  # noqa: BLE001 - any import failure means the reference is unavailable
        pytest.skip(f"dynamic-network-architectures not importable: {error}")
    return unet


def dna_plain_unet(ndim: int, in_ch: int, num_classes: int, hidden_chs, strides, kernel_sizes,
                   deep_supervision: bool = False) -> nn.Module:
    """PlainConvUNet configured as nnU-Net v2's plans do (2 convs per stage, bias, InstanceNorm, LeakyReLU)."""
    conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if ndim == 2 else (nn.Conv3d, nn.InstanceNorm3d)
    n = len(hidden_chs)
    return dna_unet().PlainConvUNet(in_ch, n, list(hidden_chs), conv, kernel_sizes, strides, 2, num_classes, 2,
                                    conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                                    nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                                    deep_supervision=deep_supervision)


# --- parameter counts -----------------------------------------------------------------------------------------


def test_3d_default_matches_nnunet_anchor() -> None:
    model = make_unet3d(1, 3)
    assert model.num_stages == 6
    assert num_params(model) == pytest.approx(31.2e6, rel=0.01)


def test_2d_default_matches_nnunet_anchor() -> None:
    model = make_unet2d(1, 3)
    assert model.num_stages == 7
    assert num_params(model) == pytest.approx(33.5e6, rel=0.01)


def test_all_heads_counted_regardless_of_deep_supervision() -> None:
    assert num_params(make_unet3d(1, 3, deep_supervision=True)) == num_params(make_unet3d(1, 3))


@pytest.mark.parametrize(("ndim", "in_ch", "num_classes"), [(3, 1, 3), (2, 1, 3), (2, 4, 14)])
def test_default_count_equals_dna_plain_conv_unet(ndim: int, in_ch: int, num_classes: int) -> None:
    builder, hidden = (make_unet2d, (32, 64, 128, 256, 512, 512, 512)) if ndim == 2 else \
        (make_unet3d, (32, 64, 128, 256, 320, 320))
    strides = [1] + [2] * (len(hidden) - 1)
    reference = dna_plain_unet(ndim, in_ch, num_classes, hidden, strides, 3)
    assert num_params(builder(in_ch, num_classes)) == num_params(reference)


# --- functional parity with dynamic-network-architectures ------------------------------------------------------

DNA_GROUPS = {"encoder.": "encoder", "decoder.stages.": "decoder", "decoder.transpconvs.": "up",
              "decoder.seg_layers.": "head"}
OUR_GROUPS = {"encoder.": "encoder", "decoder.": "decoder", "ups.": "up", "heads.": "head"}


def grouped_params(model: nn.Module, prefixes: dict[str, str]) -> dict[str, list[nn.Parameter]]:
    groups: dict[str, list[nn.Parameter]] = {g: [] for g in prefixes.values()}
    for name, param in model.named_parameters():
        group = next(g for prefix, g in prefixes.items() if name.startswith(prefix))
        groups[group].append(param)
    return groups


@pytest.mark.parametrize(("ndim", "strides", "kernels", "shape"), [
    (2, [1, 2, 2], [3, 3, 3], (2, 2, 16, 24)),
    (3, [(1, 1, 1), (1, 2, 2), (2, 2, 2)], [(1, 3, 3), (3, 3, 3), (3, 3, 3)], (1, 2, 6, 16, 8)),
])
def test_same_weights_give_same_outputs_as_dna(ndim: int, strides, kernels, shape) -> None:
    torch.manual_seed(0)
    reference = dna_plain_unet(ndim, 2, 3, (4, 8, 16), strides, kernels, deep_supervision=True).eval()
    builder = make_unet2d if ndim == 2 else make_unet3d
    ours = builder(2, 3, hidden_chs=(4, 8, 16), strides=strides, kernel_sizes=kernels, deep_supervision=True).eval()
    theirs, mine = grouped_params(reference, DNA_GROUPS), grouped_params(ours, OUR_GROUPS)
    with torch.no_grad():
        for group, params in theirs.items():
            assert [p.shape for p in params] == [p.shape for p in mine[group]], group
            for src, dst in zip(params, mine[group], strict=True):
                dst.copy_(src)
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
        assert len(got) == len(expected) == 2
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e)
        ours.deep_supervision = False
        torch.testing.assert_close(ours(x), expected[0])


# --- forward shapes and deep supervision -----------------------------------------------------------------------


def test_2d_forward_shape() -> None:
    model = make_unet2d(3, 5, hidden_chs=SMALL_2D)
    assert model(torch.randn(2, 3, 16, 12)).shape == (2, 5, 16, 12)


def test_3d_forward_shape() -> None:
    model = make_unet3d(1, 2, hidden_chs=SMALL_3D)
    assert model(torch.randn(1, 1, 8, 12, 4)).shape == (1, 2, 8, 12, 4)


@pytest.mark.parametrize("ndim", [2, 3])
def test_deep_supervision_outputs_full_resolution_first(ndim: int) -> None:
    builder = make_unet2d if ndim == 2 else make_unet3d
    model = builder(1, 3, hidden_chs=(4, 8, 8, 16), deep_supervision=True).eval()
    spatial = (16, 8, 24)[:ndim]
    x = torch.randn(1, 1, *spatial)
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) == model.num_stages - 1
    assert model.output_strides == [(1,) * ndim, (2,) * ndim, (4,) * ndim]
    for out, factors in zip(outputs, model.output_strides, strict=True):
        assert out.shape == (1, 3, *(s // f for s, f in zip(spatial, factors, strict=True)))
    model.deep_supervision = False
    single = model(x)
    assert isinstance(single, torch.Tensor)
    torch.testing.assert_close(single, outputs[0])


def test_deep_supervision_trains_every_head() -> None:
    model = make_unet2d(1, 2, hidden_chs=SMALL_2D, deep_supervision=True)
    sum(out.square().mean() for out in model(torch.randn(2, 1, 8, 8))).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_anisotropic_strides_and_divisibility() -> None:
    model = make_unet3d(1, 2, hidden_chs=(4, 8, 8, 16), strides=[1, (1, 2, 2), (2, 2, 2), (1, 2, 1)],
                        kernel_sizes=[(1, 3, 3), (1, 3, 3), 3, 3])
    assert model.divisibility == (2, 8, 4)
    assert model.output_strides == [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    assert model(torch.randn(1, 1, 6, 16, 12)).shape == (1, 2, 6, 16, 12)
    first = model.encoder[0][0].conv
    assert first.kernel_size == (1, 3, 3) and first.padding == (0, 1, 1)


def test_default_divisibility() -> None:
    assert make_unet3d(1, 2).divisibility == (32, 32, 32)
    assert make_unet2d(1, 2).divisibility == (64, 64)


def test_input_not_divisible_is_rejected_with_the_fix() -> None:
    model = make_unet2d(1, 2, hidden_chs=SMALL_2D)
    with pytest.raises(ValueError, match=r"divisible by \(4, 4\).*\(1, 1, 10, 8\).*Pad2d"):
        model(torch.randn(1, 1, 10, 8))
    with pytest.raises(ValueError, match="got \\(1, 1, 8, 8, 8\\)"):
        model(torch.randn(1, 1, 8, 8, 8))


# --- nnU-Net building blocks, initialisation and LayerT overrides ----------------------------------------------


def test_default_blocks_are_nnunet_ones() -> None:
    model = make_unet3d(1, 2, hidden_chs=SMALL_3D)
    norms = modules_of(model, nn.InstanceNorm3d)
    assert len(norms) == 2 * 3 + 2 * 2
    assert all(n.affine and n.eps == 1e-5 for n in norms)
    acts = modules_of(model, nn.LeakyReLU)
    assert len(acts) == len(norms) and all(a.negative_slope == 1e-2 and a.inplace for a in acts)
    convs = [m for m in modules_of(model, nn.Conv3d) if m.kernel_size == (3, 3, 3)]
    assert len(convs) == len(norms) and all(c.bias is not None for c in convs)
    assert [c.stride for c in convs[:6:2]] == [(1, 1, 1), (2, 2, 2), (2, 2, 2)]
    ups = modules_of(model, nn.ConvTranspose3d)
    assert [(u.kernel_size, u.stride) for u in ups] == [((2, 2, 2), (2, 2, 2))] * 2
    heads = [m for m in modules_of(model, nn.Conv3d) if m.kernel_size == (1, 1, 1)]
    assert [(h.in_channels, h.out_channels) for h in heads] == [(8, 2), (4, 2)]


def test_he_initialisation() -> None:
    torch.manual_seed(0)
    model = make_unet3d(1, 2, hidden_chs=(16, 64, 64))
    gain = math.sqrt(2 / (1 + 1e-2 ** 2))
    big_conv = model.decoder[0][1].conv  # 64 -> 64, k3: 110,592 weights
    fan_in = big_conv.in_channels * 27
    assert big_conv.weight.std().item() == pytest.approx(gain / math.sqrt(fan_in), rel=0.03)
    up = model.ups[0]  # torch computes a transposed conv's fan_in from weight.shape[1:]
    assert up.weight.std().item() == pytest.approx(gain / math.sqrt(up.weight[0].numel()), rel=0.05)
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            assert not module.bias.any()


def test_norm_swap_to_batch_norm() -> None:
    model = make_unet2d(1, 2, hidden_chs=SMALL_2D, norm=LayerT(nn.BatchNorm2d, num_features="in_ch"))
    assert not modules_of(model, nn.InstanceNorm2d)
    assert [n.num_features for n in modules_of(model, nn.BatchNorm2d)] == [4, 4, 8, 8, 16, 16, 8, 8, 4, 4]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2, 8, 8)


def test_norm_swap_to_group_norm_and_act_swap() -> None:
    model = make_unet3d(1, 2, hidden_chs=SMALL_3D, norm=LayerT(nn.GroupNorm, num_groups=2, num_channels="in_ch"),
                        act=LayerT(nn.ReLU, inplace=True))
    groups = modules_of(model, nn.GroupNorm)
    assert len(groups) == 10 and all(g.num_groups == 2 for g in groups)
    assert not modules_of(model, nn.LeakyReLU) and len(modules_of(model, nn.ReLU)) == 10
    assert model(torch.randn(1, 1, 4, 8, 8)).shape == (1, 2, 4, 8, 8)


def test_norm_and_act_can_be_left_out() -> None:
    with_norm = make_unet2d(1, 2, hidden_chs=SMALL_2D)
    model = make_unet2d(1, 2, hidden_chs=SMALL_2D, norm=False, act=False)
    norm_params = sum(num_params(n) for n in modules_of(with_norm, nn.InstanceNorm2d))
    assert num_params(model) == num_params(with_norm) - norm_params
    assert not modules_of(model, nn.InstanceNorm2d) and not modules_of(model, nn.LeakyReLU)


class MarkedConv2d(nn.Conv2d):
    """A Conv2d subclass, to see where the conv descriptor ends up."""


def test_conv_swap_reaches_blocks_and_heads_and_is_he_initialised() -> None:
    model = make_unet2d(1, 2, hidden_chs=SMALL_2D, conv=LayerT(MarkedConv2d))
    plain = [m for m in modules_of(model, nn.Conv2d) if not isinstance(m, MarkedConv2d)]
    assert plain == [] and len(modules_of(model, MarkedConv2d)) == 10 + 2
    assert all(not m.bias.any() for m in modules_of(model, MarkedConv2d))


# --- argument errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"in_ch": 0}, "make_unet3d: in_ch must be a positive integer, got 0"),
    ({"num_classes": True}, "num_classes must be a positive integer, got True"),
    ({"hidden_chs": (32,)}, "hidden_chs must list the channels of at least 2 stages"),
    ({"hidden_chs": (32, 0)}, r"hidden_chs\[1\] must be a positive integer"),
    ({"hidden_chs": "32,64"}, "hidden_chs must list"),
    ({"deep_supervision": "yes"}, "deep_supervision must be True or False"),
    ({"strides": [1, 2]}, r"strides needs one entry per stage \(3, as many as hidden_chs\)"),
    ({"strides": [2, 2, 2]}, r"strides\[0\] must be 1"),
    ({"strides": [1, (2, 2), 2]}, r"strides\[1\] must be an int or 3 ints, got \(2, 2\)"),
    ({"strides": [1, 2, -2]}, r"strides\[2\] must be a positive integer, got -2"),
    ({"kernel_sizes": [3, 3, (3, 2, 3)]}, r"kernel_sizes\[2\] = \(3, 2, 3\) must be odd"),
    ({"kernel_sizes": 3}, "kernel_sizes needs one entry per stage"),
    ({"norm": "batch"}, "norm must be a LayerT, None for the default or False to leave it out, got 'batch'"),
    ({"conv": False}, "conv must be a LayerT or None"),
    ({"variant_typo": 1, "dropout": 0.1}, r"unknown option\(s\) \['dropout', 'variant_typo'\]; the options are"),
])
def test_invalid_arguments(kwargs: dict, message: str) -> None:
    args = {"in_ch": 1, "num_classes": 2, "hidden_chs": SMALL_3D, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_unet3d(args.pop("in_ch"), args.pop("num_classes"), **args)


def test_builders_return_unet() -> None:
    assert isinstance(make_unet2d(1, 2, hidden_chs=SMALL_2D), UNet)
    assert make_unet2d(1, 2, hidden_chs=SMALL_2D).ndim == 2 and make_unet3d(1, 2, hidden_chs=SMALL_3D).ndim == 3
