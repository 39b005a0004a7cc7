"""Sliding-window inference: window placement, exact reconstruction, agreement with MONAI, TTA, modes, devices."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import Tensor, nn

from mipcandy.data import (
    gaussian_importance_map,
    keep_largest_component,
    logits_to_labels,
    predict_labels,
    predict_probabilities,
    sliding_window_inference,
    window_slices,
    window_starts,
)

SHAPES = [(30, 45, 37), (17, 16, 40)]


def _identity(channels: int, ndim: int) -> nn.Module:
    conv = (nn.Conv2d if ndim == 2 else nn.Conv3d)(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(channels, channels, *([1] * ndim)))
    return conv


def _random_net(ndim: int, in_ch: int = 1, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    return nn.Sequential(conv(in_ch, 4, 3, padding=1), nn.InstanceNorm3d(4) if ndim == 3 else nn.InstanceNorm2d(4),
                         nn.LeakyReLU(), conv(4, classes, (3, 1, 3)[:ndim], padding="same"))


@pytest.mark.parametrize("steps", ["nnunet", "monai"])
def test_windows_cover_every_voxel_from_first_to_last(steps: str) -> None:
    for size, patch, overlap in itertools.product((5, 16, 17, 48, 97, 150), (1, 5, 16, 33), (0.0, 0.25, 0.5, 0.8)):
        if patch > size:
            continue
        starts = window_starts(size, patch, overlap, steps)
        covered = np.zeros(size, dtype=int)
        for s in starts:
            covered[s:s + patch] += 1
        assert covered.min() >= 1 and starts[0] == 0 and starts[-1] == size - patch, (size, patch, overlap)
        assert starts == sorted(set(starts))
    slices = window_slices((20, 9, 31), (8, 9, 16), (0.5, 0.5, 0.25), steps)
    covered = torch.zeros(20, 9, 31)
    for s in slices:
        covered[s] += 1
    assert covered.min() >= 1


def test_nnunet_steps_match_nnunet() -> None:
    ref = pytest.importorskip("nnunetv2.inference.sliding_window_prediction")
    for size, patch, overlap in itertools.product((16, 17, 48, 97, 150, 193), (5, 16, 33, 96), (0.25, 0.5, 0.75)):
        if patch <= size:
            expected = ref.compute_steps_for_sliding_window((size,), (patch,), 1 - overlap)[0]
            assert window_starts(size, patch, overlap, "nnunet") == [int(s) for s in expected], (size, patch)


def test_monai_steps_and_importance_map_match_monai() -> None:
    pytest.importorskip("monai")
    from monai.data.utils import compute_importance_map, dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for size, patch, overlap in itertools.product((16, 17, 48, 97, 150), (5, 16, 33, 96), (0.25, 0.5, 0.75)):
        if patch <= size:
            interval = _get_scan_interval((size,), (patch,), 1, (overlap,))
            expected = [s[0].start for s in dense_patch_slices((size,), (patch,), interval)]
            assert window_starts(size, patch, overlap, "monai") == expected, (size, patch, overlap)
    for patch in [(96, 96, 96), (7, 12, 33), (64, 48)]:
        ours = gaussian_importance_map(patch, 0.125)
        torch.testing.assert_close(ours, compute_importance_map(patch, "gaussian", 0.125), rtol=0, atol=1e-7)
    assert window_starts(150, 96, 0.5, "nnunet") == [0, 27, 54]
    assert window_starts(150, 96, 0.5, "monai") == [0, 48, 54]


@pytest.mark.parametrize(("image_shape", "patch"), [
    ((2, 37, 41, 29), (16, 16, 16)),  # not divisible by the step
    ((1, 5, 20, 7), (8, 16, 16)),  # smaller than the patch on some axes
    ((3, 50, 33), (16, 16)),  # 2D
    ((1, 6, 5), (16, 8)),  # 2D, smaller than the patch everywhere
])
@pytest.mark.parametrize("gaussian", [True, False])
def test_identity_network_gives_back_the_image(image_shape: tuple[int, ...], patch: tuple[int, ...],
                                              gaussian: bool) -> None:
    image = torch.randn(image_shape)
    out = sliding_window_inference(image, _identity(image_shape[0], len(patch)), patch, gaussian=gaussian,
                                   overlap=0.5, mirror_axes=tuple(range(len(patch))))
    assert out.shape == image.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, image, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", [None, "softmax"])
def test_agrees_with_monai(shape: tuple[int, ...], activation: str | None) -> None:
    monai_inferers = pytest.importorskip("monai.inferers")
    net = _random_net(3).eval()
    image = torch.randn(1, 1, *shape)
    patch = (16, 16, 16)
    ours = sliding_window_inference(image, net, patch, overlap=0.5, batch_size=3, steps="monai",
                                    activation=activation)

    def predictor(x: Tensor) -> Tensor:
        return net(x).softmax(1) if activation else net(x)

    with torch.no_grad():
        ref = monai_inferers.sliding_window_inference(image, patch, 3, predictor, overlap=0.5, mode="gaussian",
                                                      sigma_scale=0.125)[0]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    if shape == (30, 45, 37):  # the placements differ here, so nnU-Net's steps give another (valid) result
        nnunet = sliding_window_inference(image, net, patch, overlap=0.5, activation=activation)
        assert (nnunet - ref).abs().max() > 1e-4


def test_agrees_with_monai_in_2d_with_padding() -> None:
    monai_inferers = pytest.importorskip("monai.inferers")
    net = _random_net(2, in_ch=2).eval()
    image = torch.randn(2, 11, 40)
    ours = predict_probabilities(image, net, (16, 16), overlap=0.5, steps="monai")
    with torch.no_grad():
        ref = monai_inferers.sliding_window_inference(image[None], (16, 16), 4, net, overlap=0.5,
                                                      mode="gaussian")[0].softmax(0)
    assert ours.shape == (3, 11, 40)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


class _Flipped(nn.Module):
    """Reference TTA written out by hand: the mean of net(flip(x)) flipped back over every axis subset."""

    def __init__(self, net: nn.Module, axes: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.axes = net, axes

    def forward(self, x: Tensor) -> Tensor:
        outputs = []
        for k in range(len(self.axes) + 1):
            for combo in itertools.combinations(self.axes, k):
                dims = [a + 2 for a in combo]
                outputs.append(self.net(x.flip(dims)).flip(dims) if dims else self.net(x))
        return torch.stack(outputs).mean(0)


@pytest.mark.parametrize("axes", [(0, 1, 2), (2,), (0, 2)])
def test_mirroring_equals_manual_averaging(axes: tuple[int, ...]) -> None:
    net = _random_net(3)
    image = torch.randn(1, 20, 18, 25)
    ours = sliding_window_inference(image, net, (12, 12, 12), mirror_axes=axes)
    manual = sliding_window_inference(image, _Flipped(net, axes), (12, 12, 12))
    plain = sliding_window_inference(image, net, (12, 12, 12))
    torch.testing.assert_close(ours, manual, rtol=1e-5, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-3  # the kernels are not symmetric, so mirroring changes the result


class _DeepSupervision(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> list[Tensor]:
        full = self.net(x)
        return [full, nn.functional.avg_pool3d(full, 2), nn.functional.avg_pool3d(full, 4)]


def test_deep_supervision_uses_the_full_resolution_output() -> None:
    net = _random_net(3)
    image = torch.randn(1, 20, 24, 17)
    ours = sliding_window_inference(image, _DeepSupervision(net), (8, 8, 8))
    torch.testing.assert_close(ours, sliding_window_inference(image, net, (8, 8, 8)), rtol=0, atol=0)


class _Probe(nn.Module):
    """Records how it was called: grad mode, inference mode and its training flag."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _random_net(3)
        self.calls: list[tuple[bool, bool, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled(), self.training))
        return self.conv(x)


def test_inference_mode_and_restored_module_modes() -> None:
    probe = _Probe().train()
    probe.conv[1].eval()  # a frozen submodule must stay frozen after inference
    image = torch.randn(1, 10, 10, 10, requires_grad=True)
    out = sliding_window_inference(image, probe, (8, 8, 8))
    assert probe.calls and all(call == (False, True, False) for call in probe.calls)
    assert not out.requires_grad
    assert probe.training and probe.conv.training and not probe.conv[1].training


def test_module_modes_restored_after_an_error() -> None:
    net = _random_net(3).train()
    with pytest.raises(ValueError, match="channels but num_classes is 5"):
        sliding_window_inference(torch.randn(1, 10, 10, 10), net, (8, 8, 8), num_classes=5)
    assert all(m.training for m in net.modules())


def test_batch_size_invariance_and_devices() -> None:
    net = _random_net(3)
    image = torch.randn(1, 27, 19, 30)
    reference = sliding_window_inference(image, net, (12, 12, 12), batch_size=1)
    for batch_size in (4, 7, 100):
        out = sliding_window_inference(image, net, (12, 12, 12), batch_size=batch_size)
        torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)
    explicit = sliding_window_inference(image, net, (12, 12, 12), device="cpu", buffer_device="cpu", num_classes=3)
    torch.testing.assert_close(explicit, reference, rtol=0, atol=1e-6)
    # "cpu:0" is a different torch.device from "cpu": this takes the weight-then-transfer path used for GPU windows
    # with a CPU buffer.
    transferred = sliding_window_inference(image, net, (12, 12, 12), buffer_device="cpu:0", batch_size=4)
    torch.testing.assert_close(transferred, reference, rtol=0, atol=1e-6)


def test_autocast_runs_and_stays_close() -> None:
    net = _random_net(3)
    image = torch.randn(1, 20, 20, 20)
    full = sliding_window_inference(image, net, (12, 12, 12))
    mixed = sliding_window_inference(image, net, (12, 12, 12), amp=True)  # bfloat16 autocast on CPU
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, rtol=0.05, atol=0.05)


def test_probabilities_and_labels_multiclass_and_binary() -> None:
    image = torch.randn(1, 14, 20, 9)
    net = _random_net(3)
    probabilities = predict_probabilities(image, net, (8, 8, 8))
    labels = predict_labels(image, net, (8, 8, 8))
    torch.testing.assert_close(probabilities.sum(0), torch.ones(14, 20, 9))
    assert labels.shape == (1, 14, 20, 9) and labels.dtype == torch.int64
    assert torch.equal(labels[0], probabilities.argmax(0))
    binary = _random_net(3, classes=1)
    probabilities = predict_probabilities(image, binary, (8, 8, 8))
    labels = predict_labels(image, binary, (8, 8, 8))
    assert probabilities.shape == (1, 14, 20, 9) and 0 < probabilities.mean() < 1
    assert torch.equal(labels, (probabilities > 0.5).long())


def test_labels_from_a_real_file(tmp_path: Path) -> None:
    """An image read back from NIfTI and thresholded at 0.5 by a 1x1 conv with bias -0.5: labels = image > 0.5."""
    from mipcandy.data.io import load_image

    array = np.random.default_rng(3).random((19, 26, 23)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "case.nii.gz"))
    image, _ = load_image(tmp_path / "case.nii.gz")
    threshold = nn.Conv3d(1, 1, 1)
    with torch.no_grad():
        threshold.weight.fill_(1.0)
        threshold.bias.fill_(-0.5)
    labels = predict_labels(image, threshold, (16, 16, 16), mirror_axes=(0, 1, 2))
    assert torch.equal(labels[0], torch.from_numpy(array > 0.5).long())


def test_bad_input_is_explained() -> None:
    net = _random_net(3)
    with pytest.raises(ValueError, match=r"\(C, \*spatial\) or \(1, C, \*spatial\)"):
        sliding_window_inference(torch.randn(2, 1, 8, 8, 8), net, (8, 8, 8))
    with pytest.raises(ValueError, match="mirror_axes"):
        sliding_window_inference(torch.randn(1, 8, 8, 8), net, (8, 8, 8), mirror_axes=(3,))
    with pytest.raises(ValueError, match="input resolution"):
        sliding_window_inference(torch.randn(1, 8, 8, 8), nn.Sequential(net, nn.MaxPool3d(2)), (8, 8, 8))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(torch.randn(1, 8, 8, 8), net, (4, 4, 4), overlap=1.0)
    with pytest.raises(ValueError, match="steps"):
        sliding_window_inference(torch.randn(1, 9, 8, 8), net, (4, 4, 4), steps="tiled")  # type: ignore[arg-type]


def test_keep_largest_component_per_class_and_jointly() -> None:
    labels = torch.zeros(1, 12, 12, 12, dtype=torch.int64)
    labels[0, 1:5, 1:5, 1:5] = 1  # big class-1 blob
    labels[0, 8:10, 8:10, 8:10] = 1  # small class-1 blob
    labels[0, 5, 5, 5] = 1  # touches the big blob only diagonally
    labels[0, 1:3, 8:11, 1:3] = 2  # class 2: one blob, kept
    labels[0, 10, 1, 10] = 2  # and a stray voxel
    out = keep_largest_component(labels)
    expected = labels.clone()
    expected[0, 8:10, 8:10, 8:10] = 0
    expected[0, 10, 1, 10] = 0
    assert torch.equal(out, expected)
    faces_only = keep_largest_component(labels, [1], fully_connected=False)
    assert faces_only[0, 5, 5, 5] == 0 and faces_only[0, 10, 1, 10] == 2
    # Jointly, the class-2 blob is a separate component from the larger class-1 blob: it goes, both classes do.
    joint = keep_largest_component(labels[0], [(1, 2)])
    assert joint.shape == (12, 12, 12)
    assert joint[1:3, 8:11, 1:3].eq(0).all() and joint[1:5, 1:5, 1:5].eq(1).all()
    assert torch.equal(keep_largest_component(logits_to_labels(torch.zeros(3, 4, 4))), torch.zeros(1, 4, 4).long())
    with pytest.raises(TypeError, match="integer label map"):
        keep_largest_component(torch.rand(1, 4, 4))
