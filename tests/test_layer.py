"""LayerT, the conv blocks, padding and the network bases (mipcandy.layer, mipcandy.common.module)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mipcandy import ConvBlock2d, ConvBlock3d, LayerT, Pad2d, Pad3d, PaddedNetwork, PadTo, Placeholder, unpad
from mipcandy.layer import WithNetwork, auto_device, load_weights, save_weights


def test_placeholders_resolve_from_assemble_keywords() -> None:
    norm = LayerT(nn.GroupNorm, num_groups="groups", num_channels="in_ch").assemble(groups=2, in_ch=8)
    assert (norm.num_groups, norm.num_channels) == (2, 8)
    bn = LayerT(nn.BatchNorm2d, num_features="in_ch").assemble(in_ch=64)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 64


def test_literal_strings_are_not_placeholders() -> None:
    conv = LayerT(nn.Conv2d, padding_mode="reflect", padding="same").assemble(2, 3, 3)
    assert conv.padding_mode == "reflect" and conv.padding == "same"


def test_unresolved_placeholder_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"placeholder 'in_ch' for argument 'num_features'.*assemble\(in_ch=\.\.\.\)"):
        LayerT(nn.BatchNorm2d, num_features="in_ch").assemble()
    with pytest.raises(TypeError, match="placeholder 'width'"):
        LayerT(nn.Conv2d, padding=Placeholder("width")).assemble(1, 1, 3)


def test_unknown_assemble_keyword_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"\['in_ch'\] that match no placeholder.*no parameter of ReLU"):
        LayerT(nn.ReLU).assemble(in_ch=4)
    with pytest.raises(TypeError, match="already stored"):
        LayerT(nn.LeakyReLU, negative_slope=0.1).assemble(negative_slope=0.2)


def test_unmatched_keywords_reach_the_constructor_when_it_has_the_parameter() -> None:
    act = LayerT(nn.LeakyReLU).assemble(negative_slope=0.3)
    assert act.negative_slope == 0.3


def test_update_and_copy_return_new_descriptors() -> None:
    base = LayerT(nn.LeakyReLU, negative_slope=1e-2)
    changed = base.update(negative_slope=0.2)
    assert base.kwargs == {"negative_slope": 1e-2} and changed.kwargs == {"negative_slope": 0.2}
    with pytest.raises(KeyError, match="inplace"):
        base.update(inplace=True)
    assert base.update(must_exist=False, inplace=True).assemble().inplace
    clone = base.copy()
    assert clone == base and clone is not base and clone.kwargs is not base.kwargs


def test_conv_blocks_compose_layert_parts() -> None:
    block = ConvBlock2d(3, 8, 3)
    assert isinstance(block.norm, nn.BatchNorm2d) and block.norm.num_features == 8
    assert block(torch.zeros(2, 3, 10, 10)).shape == (2, 8, 10, 10)
    custom = ConvBlock3d(2, 4, 3, stride=2, norm=LayerT(nn.InstanceNorm3d, num_features="in_ch", affine=True),
                         act=LayerT(nn.LeakyReLU, negative_slope=1e-2, inplace=True))
    assert isinstance(custom.norm, nn.InstanceNorm3d) and custom.norm.affine
    assert isinstance(custom.act, nn.LeakyReLU)
    assert custom(torch.zeros(1, 2, 9, 8, 8)).shape == (1, 4, 5, 4, 4)
    bare = ConvBlock2d(1, 2, 1, norm=None, act=None)
    assert isinstance(bare.norm, nn.Identity) and isinstance(bare.act, nn.Identity)


@pytest.mark.parametrize("pad_cls, shape", [(Pad2d, (2, 3, 37, 64)), (Pad3d, (1, 1, 5, 17, 32))])
def test_pad_to_divisibility_and_unpad(pad_cls, shape) -> None:
    pad = pad_cls(16)
    x = torch.randn(shape)
    padded = pad(x)
    assert all(s % 16 == 0 and s - o < 16 for s, o in zip(padded.shape[2:], shape[2:], strict=True))
    assert torch.equal(unpad(padded, pad.paddings(shape)), x)


def test_pad_to_a_minimum_shape_keeps_larger_axes() -> None:
    x = torch.randn(1, 2, 5, 40, 7)
    pad = PadTo((8, 32, 8), value=-1.0)
    padded = pad(x)
    assert padded.shape == (1, 2, 8, 40, 8)
    assert pad.paddings(x.shape) == ((1, 2), (0, 0), (0, 1)) and padded[0, 0, 0, 0, 0] == -1
    assert torch.equal(unpad(padded, pad.paddings(x.shape)), x)
    with pytest.raises(ValueError, match="min_shape"):
        PadTo((8, 0))


class _TwoScales(nn.Module):
    """Full resolution and half resolution outputs; only divisible-by-2 inputs work."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.deep_supervision = False

    def set_deep_supervision(self, enabled: bool) -> None:
        self.deep_supervision = enabled

    def forward(self, x):
        assert x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
        out = self.conv(x)
        return [out, nn.functional.avg_pool2d(out, 2)] if self.deep_supervision else out


def test_padded_network_crops_every_output_back() -> None:
    inner = _TwoScales()
    net = PaddedNetwork(inner, Pad2d(4))
    x = torch.randn(1, 1, 13, 10)
    assert net(x).shape == (1, 2, 13, 10)
    net.set_deep_supervision(True)
    full, half = net(x)
    assert full.shape == (1, 2, 13, 10) and half.shape == (1, 2, 7, 5)  # padded 16x12 -> 8x6, crop (1,1)/(1,0)
    padded = nn.functional.pad(x, (1, 1, 1, 2))
    assert torch.allclose(full, inner.conv(padded)[..., 1:-2, 1:-1])
    with pytest.raises(TypeError, match="no deep-supervision heads"):
        PaddedNetwork(nn.Conv2d(1, 1, 1), Pad2d(2)).set_deep_supervision(True)


class TinyNetwork(WithNetwork):
    def build_network(self, example_shape):
        return nn.Conv2d(example_shape[0], 2, 3, padding=1)


def test_weights_round_trip_and_mismatch(tmp_path) -> None:
    owner = TinyNetwork()
    model = owner.load_model((1, 8, 8))
    path = tmp_path / "weights.safetensors"
    owner.save_model(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]
    again = owner.load_model((1, 8, 8), checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    with pytest.raises(RuntimeError, match="does not fit the network"):
        load_weights(nn.Linear(2, 2), path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(model, tmp_path / "missing.safetensors")


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "weights.safetensors"
    model = nn.Linear(2, 2)
    save_weights(model, path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        save_weights(nn.Linear(2, 2), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_auto_device_without_gpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto_device().type in (expected, "mps")
