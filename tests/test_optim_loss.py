"""Segmentation losses and deep supervision against independent NumPy references (and MONAI when installed)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mipcandy.common.optim import (
    DeepSupervisionWrapper,
    DiceBCELossWithLogits,
    DiceCELossWithLogits,
    deep_supervision_weights,
    downsample_targets,
    segmentation_loss,
)

SMOOTH = 1e-5


def make_case(seed: int, num_classes: int, spatial: tuple[int, ...], batch: int = 2):
    """Random double logits and integer labels (B, 1, *spatial)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((batch, num_classes, *spatial), generator=g, dtype=torch.float64)
    labels = torch.randint(0, max(num_classes, 2), (batch, 1, *spatial), generator=g)
    return logits, labels


def numpy_dice_ce(logits: torch.Tensor, labels: torch.Tensor, include_background: bool,
                  batch_dice: bool) -> tuple[float, float]:
    """Straightforward softmax cross-entropy and mean soft Dice, written independently in NumPy."""
    x = logits.detach().numpy()
    y = labels.numpy()[:, 0]
    num_classes = x.shape[1]
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    ce = float(-np.log(np.take_along_axis(p, y[:, None], axis=1)).mean())
    onehot = np.moveaxis(np.eye(num_classes)[y], -1, 1)
    if not include_background:
        p, onehot = p[:, 1:], onehot[:, 1:]
    axes = tuple(range(2, p.ndim))
    if batch_dice:
        axes = (0, *axes)
    dice = (2 * (p * onehot).sum(axes) + SMOOTH) / (p.sum(axes) + onehot.sum(axes) + SMOOTH)
    return ce, float(dice.mean())


def numpy_dice_bce(logits: torch.Tensor, mask: torch.Tensor, batch_dice: bool) -> tuple[float, float]:
    """Binary cross-entropy and soft Dice of the sigmoid, written independently in NumPy."""
    x = logits.detach().numpy()
    y = mask.numpy().astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    bce = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    axes = tuple(range(2, p.ndim))
    if batch_dice:
        axes = (0, *axes)
    dice = (2 * (p * y).sum(axes) + SMOOTH) / (p.sum(axes) + y.sum(axes) + SMOOTH)
    return bce, float(dice.mean())


def nearest_exact_numpy(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-aligned nearest neighbour: output voxel i reads input floor((i + 0.5) * n_in / n_out)."""
    out = labels
    for axis, size in enumerate(shape, start=2):
        n_in = labels.shape[axis]
        index = np.minimum(np.floor((np.arange(size) + 0.5) * n_in / size).astype(int), n_in - 1)
        out = np.take(out, index, axis=axis)
    return out


@pytest.mark.parametrize("spatial", [(6, 7), (4, 5, 3)])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_ce_matches_numpy(spatial, include_background, batch_dice):
    logits, labels = make_case(0, 4, spatial)
    loss_fn = DiceCELossWithLogits(4, lambda_ce=0.7, lambda_dice=1.3, include_background=include_background,
                                   batch_dice=batch_dice)
    loss, metrics = loss_fn(logits, labels)
    ce, dice = numpy_dice_ce(logits, labels, include_background, batch_dice)
    assert metrics["ce loss"] == pytest.approx(ce, rel=1e-9)
    assert metrics["soft dice"] == pytest.approx(dice, rel=1e-9)
    assert loss.item() == pytest.approx(0.7 * ce + 1.3 * (1 - dice), rel=1e-9)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-12)
    # (B, *spatial) labels are accepted as well
    assert loss_fn(logits, labels[:, 0])[0].item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_bce_matches_numpy(batch_dice):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 5, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 1, 5, 6, generator=g) > 0.6
    loss, metrics = DiceBCELossWithLogits(lambda_bce=2, batch_dice=batch_dice)(logits, mask)
    bce, dice = numpy_dice_bce(logits, mask, batch_dice)
    assert metrics["bce loss"] == pytest.approx(bce, rel=1e-9)
    assert metrics["soft dice"] == pytest.approx(dice, rel=1e-9)
    assert loss.item() == pytest.approx(2 * bce + (1 - dice), rel=1e-9)


def test_dice_ce_matches_monai_values_and_gradients():
    monai_losses = pytest.importorskip("monai.losses")
    logits, labels = make_case(2, 3, (5, 4, 6))
    ours = logits.clone().requires_grad_(True)
    theirs = logits.clone().requires_grad_(True)
    loss, _ = DiceCELossWithLogits(3)(ours, labels)
    reference = monai_losses.DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                                        smooth_nr=SMOOTH, smooth_dr=SMOOTH)(theirs, labels)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-9)
    loss.backward()
    reference.backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-7, atol=1e-12)


def test_dice_bce_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 7, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 1, 7, 5, generator=g) > 0.5).double()
    loss, _ = DiceBCELossWithLogits()(logits, mask)
    reference = monai_losses.DiceCELoss(sigmoid=True, batch=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH)(logits, mask)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-9)


@pytest.mark.parametrize("lambda_ce", [1.0, 0.0])
def test_gradients_flow_to_every_logit(lambda_ce):
    logits, labels = make_case(4, 3, (6, 6))
    logits = logits.float().requires_grad_(True)
    loss, _ = DiceCELossWithLogits(3, lambda_ce=lambda_ce)(logits, labels)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(1) > 0).all()
    binary = torch.randn(2, 1, 6, 6, requires_grad=True)
    DiceBCELossWithLogits(lambda_bce=lambda_ce)(binary, labels.clamp(max=1))[0].backward()
    assert torch.isfinite(binary.grad).all() and (binary.grad != 0).all()


def test_half_precision_logits_are_summed_in_float32():
    logits, labels = make_case(5, 3, (8, 8))
    half = logits.to(torch.bfloat16)
    for loss_fn, target in ((DiceCELossWithLogits(3), labels), (DiceBCELossWithLogits(), labels.clamp(max=1))):
        channels = slice(None) if isinstance(loss_fn, DiceCELossWithLogits) else slice(0, 1)
        loss, _ = loss_fn(half[:, channels], target)
        assert loss.dtype == torch.float32
        expected = loss_fn(half[:, channels].double(), target)[0].item()
        assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_perfect_prediction_has_near_zero_dice_component():
    _, labels = make_case(6, 3, (8, 8))
    onehot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    loss, metrics = DiceCELossWithLogits(3)(40 * onehot - 20, labels)
    assert 1 - metrics["soft dice"] < 1e-6
    assert metrics["ce loss"] < 1e-6 and loss.item() < 1e-5
    mask = labels.clamp(max=1)
    loss, metrics = DiceBCELossWithLogits()(40 * mask.float() - 20, mask)
    assert 1 - metrics["soft dice"] < 1e-6 and loss.item() < 1e-5
    wrong = DiceCELossWithLogits(3)(20 - 40 * onehot, labels)[1]
    assert wrong["soft dice"] < 0.05


def test_segmentation_loss_selects_by_channel_count():
    binary = segmentation_loss(1, lambda_ce=0.5, batch_dice=False)
    assert isinstance(binary, DiceBCELossWithLogits)
    assert binary.lambda_xent == 0.5 and binary.batch_dice is False
    multi = segmentation_loss(3, include_background=True, smooth=1e-3)
    assert isinstance(multi, DiceCELossWithLogits)
    assert (multi.num_classes, multi.include_background, multi.smooth) == (3, True, 1e-3)
    assert isinstance(segmentation_loss(2), DiceCELossWithLogits)
    with pytest.raises(ValueError, match="at least 1"):
        segmentation_loss(0)


def test_bad_inputs_raise_clear_errors():
    logits, labels = make_case(7, 3, (4, 4))
    loss_fn = DiceCELossWithLogits(3)
    with pytest.raises(ValueError, match=r"class ids must lie in 0\.\.2"):
        loss_fn(logits, labels.masked_fill(labels == 0, 3))
    with pytest.raises(ValueError, match="span -1"):
        loss_fn(logits, labels - 1)
    with pytest.raises(ValueError, match="num_classes=4"):
        DiceCELossWithLogits(4)(logits, labels)
    with pytest.raises(ValueError, match="does not fit logits"):
        loss_fn(logits, labels[..., :3])
    with pytest.raises(ValueError, match="one logit channel"):
        DiceBCELossWithLogits()(logits, labels)
    with pytest.raises(ValueError, match=r"values in 0\.\.1"):
        DiceBCELossWithLogits()(logits[:, :1], labels + 1)
    with pytest.raises(ValueError, match="DiceBCELossWithLogits"):
        DiceCELossWithLogits(1)


@pytest.mark.parametrize("num_outputs, expected", [
    (1, [1]), (2, [1, 0]), (3, [2, 1, 0]), (4, [4, 2, 1, 0]), (5, [8, 4, 2, 1, 0])])
def test_deep_supervision_weights_follow_nnunet(num_outputs, expected):
    total = sum(expected)
    assert deep_supervision_weights(num_outputs) == pytest.approx([w / total for w in expected], rel=1e-12)


@pytest.mark.parametrize("full, shapes", [((7, 9), [(4, 5), (2, 3), (7, 9)]), ((8, 6, 5), [(4, 3, 3), (2, 2, 1)])])
def test_downsample_targets_is_centre_nearest(full, shapes):
    labels = torch.randint(0, 5, (2, 1, *full), generator=torch.Generator().manual_seed(8), dtype=torch.uint8)
    for resized, shape in zip(downsample_targets(labels, shapes), shapes, strict=True):
        assert resized.dtype == torch.uint8 and tuple(resized.shape[2:]) == shape
        np.testing.assert_array_equal(resized.numpy(), nearest_exact_numpy(labels.numpy(), shape))


def pyramid(seed: int, num_classes: int, shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((2, num_classes, *s), generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


def test_wrapper_sums_weighted_heads_on_downsampled_targets(monkeypatch):
    shapes = [(16, 12), (8, 6), (4, 3), (2, 2)]
    heads = pyramid(9, 3, shapes)
    _, labels = make_case(9, 3, shapes[0])
    base = DiceCELossWithLogits(3)
    calls = []
    interpolate = F.interpolate
    monkeypatch.setattr(F, "interpolate", lambda *a, **k: calls.append(k["size"]) or interpolate(*a, **k))
    loss, metrics = DeepSupervisionWrapper(base)(heads, labels)
    assert calls == [(8, 6), (4, 3)]  # full resolution needs none, the zero-weight head is skipped
    weights = deep_supervision_weights(4)
    expected = 0.0
    for head, shape, weight in zip(heads, shapes, weights, strict=True):
        if weight:
            target = torch.from_numpy(nearest_exact_numpy(labels.numpy(), shape))
            expected += weight * base(head, target)[0].item()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    full = base(heads[0], labels)[1]
    assert metrics["ce loss"] == pytest.approx(full["ce loss"], rel=1e-12)
    assert metrics["soft dice"] == pytest.approx(full["soft dice"], rel=1e-12)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-12)
    loss.backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in heads[:3])
    assert heads[3].grad is None


def test_wrapper_skips_zero_weight_heads_and_checks_counts():
    heads = pyramid(10, 1, [(8, 8), (4, 4)])
    nan_head = torch.full_like(heads[1], float("nan"))
    mask = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(10)) > 0.5
    loss, _ = DeepSupervisionWrapper(DiceBCELossWithLogits(), [1.0, 0.0])([heads[0], nan_head], mask)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(DiceBCELossWithLogits()(heads[0], mask)[0].item(), rel=1e-12)
    with pytest.raises(ValueError, match="returned 2 deep supervision outputs, but 3 weights"):
        DeepSupervisionWrapper(DiceBCELossWithLogits(), [0.5, 0.3, 0.2])(heads, mask)
    with pytest.raises(TypeError, match="terms"):
        DeepSupervisionWrapper(torch.nn.MSELoss())  # type: ignore[arg-type]


def test_wrapper_accepts_stacked_full_resolution_heads():
    g = torch.Generator().manual_seed(11)
    stacked = torch.randn(2, 3, 4, 6, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 6, 6), generator=g)
    weights = [0.5, 0.3, 0.2]
    loss, _ = DeepSupervisionWrapper(DiceCELossWithLogits(4), weights)(stacked, labels)
    base = DiceCELossWithLogits(4)
    expected = sum(w * base(stacked[:, i], labels)[0].item() for i, w in enumerate(weights))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
