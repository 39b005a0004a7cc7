"""Overlap metrics: agreement with MONAI, layouts, empty-class rules, reductions and errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mipcandy.metrics import binary_dice, dice_similarity_coefficient, iou, soft_dice


def smooth_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Spatially correlated noise, so thresholds give blob-like structures rather than salt and pepper."""
    noise = torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(seed))
    pool = F.avg_pool3d if len(shape) == 3 else F.avg_pool2d
    return pool(noise, 5, stride=1, padding=2)[0, 0]


def label_map(shape: tuple[int, ...], seed: int, num_classes: int = 3) -> torch.Tensor:
    """Label map with ids 0..num_classes-1 from quantiles of smooth noise."""
    noise = smooth_noise(shape, seed)
    cuts = torch.quantile(noise.flatten(), torch.linspace(0.4, 0.9, num_classes - 1))
    return torch.bucketize(noise, cuts)


def morph(labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Shift, erode or dilate every foreground class of a label map (max-pool morphology)."""
    if kind == "shifted":
        return torch.roll(labels, shifts=(2,) * labels.ndim, dims=tuple(range(labels.ndim)))
    if kind == "random":
        return label_map(tuple(labels.shape), seed=99, num_classes=int(labels.max()) + 1)
    pool = F.max_pool3d if labels.ndim == 3 else F.max_pool2d
    out = torch.zeros_like(labels)
    for class_id in range(1, int(labels.max()) + 1):
        mask = (labels == class_id).float()[None, None]
        mask = pool(mask, 3, 1, 1) if kind == "dilated" else -pool(-mask, 3, 1, 1)
        out[mask[0, 0] > 0] = class_id
    return out


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, *spatial) ids -> (B, K, *spatial) float one-hot."""
    return F.one_hot(labels[:, 0], num_classes).movedim(-1, 1).float()


CASES = [(shape, kind) for shape in ((32, 32, 32), (48, 40)) for kind in ("random", "shifted", "eroded", "dilated")]


@pytest.mark.parametrize(("shape", "kind"), CASES)
def test_dice_and_iou_agree_with_monai(shape: tuple[int, ...], kind: str) -> None:
    metrics = pytest.importorskip("monai.metrics")
    labels = torch.stack([label_map(shape, seed) for seed in (1, 2)])[:, None]
    outputs = torch.stack([morph(case[0], kind) for case in labels])[:, None]
    expected_dice = metrics.compute_dice(one_hot(outputs, 3), one_hot(labels, 3), include_background=False,
                                         ignore_empty=False)
    expected_iou = metrics.compute_iou(one_hot(outputs, 3), one_hot(labels, 3), include_background=False,
                                       ignore_empty=False)
    ours_dice = dice_similarity_coefficient(outputs, labels, reduction="none", spatial_dims=len(shape))
    ours_iou = iou(outputs, labels, reduction="none", spatial_dims=len(shape))
    assert ours_dice.shape == (2, 2)
    torch.testing.assert_close(ours_dice, expected_dice, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_iou, expected_iou, atol=1e-4, rtol=0)
    assert ours_dice.min() < 0.999  # the perturbation really changed something


def test_one_hot_masks_label_maps_and_binary_agree() -> None:
    labels = label_map((20, 24, 28), 3)[None, None]
    outputs = morph(labels[0, 0], "shifted")[None, None]
    from_ids = dice_similarity_coefficient(outputs, labels, include_background=True, reduction="none")
    hot_out, hot_lab = one_hot(outputs, 3), one_hot(labels, 3)
    from_float = dice_similarity_coefficient(hot_out, hot_lab, reduction="none")
    from_bool = dice_similarity_coefficient(hot_out.bool(), hot_lab.bool(), reduction="none")
    per_channel = binary_dice(hot_out.long(), hot_lab.long(), reduction="none")
    for other in (from_float, from_bool, per_channel):
        torch.testing.assert_close(other, from_ids)


def test_layouts_unbatched_batched_and_spatial_only() -> None:
    labels = torch.stack([label_map((16, 18, 20), seed) for seed in (4, 5)])[:, None]
    outputs = torch.stack([morph(case[0], "eroded") for case in labels])[:, None]
    batched = dice_similarity_coefficient(outputs, labels, reduction="none")
    for case in range(2):
        unbatched = dice_similarity_coefficient(outputs[case], labels[case], spatial_dims=3, reduction="none")
        assert unbatched.shape == (2,)
        torch.testing.assert_close(unbatched, batched[case])
        spatial_only = dice_similarity_coefficient(outputs[case, 0], labels[case, 0], spatial_dims=3,
                                                   reduction="none")
        torch.testing.assert_close(spatial_only, batched[case])
    # 2D batches are 4D, like 3D cases: spatial_dims tells them apart
    sliced = dice_similarity_coefficient(outputs[:, :, 7], labels[:, :, 7], spatial_dims=2, reduction="none")
    expected = [dice_similarity_coefficient(outputs[b, :, 7], labels[b, :, 7], spatial_dims=2, reduction="none")
                for b in range(2)]
    torch.testing.assert_close(sliced, torch.stack(expected))


def test_binary_dice_any_batch_and_channel_layout() -> None:
    noise = torch.stack([smooth_noise((24, 24), seed) for seed in range(6)]).view(2, 3, 24, 24)
    labels = noise > noise.median()
    outputs = torch.roll(labels, 1, -1)
    values = binary_dice(outputs, labels, spatial_dims=2, reduction="none")
    assert values.shape == (2, 3)
    flat_out, flat_lab = outputs.flatten(2).double(), labels.flatten(2).double()
    expected = 2 * (flat_out * flat_lab).sum(2) / (flat_out.sum(2) + flat_lab.sum(2))
    torch.testing.assert_close(values.double(), expected, atol=1e-6, rtol=0)
    assert binary_dice(outputs[1, 2], labels[1, 2]).item() == pytest.approx(expected[1, 2].item(), abs=1e-6)
    assert binary_dice(outputs, labels, spatial_dims=2).item() == pytest.approx(expected.mean().item(), abs=1e-6)


def test_empty_class_rule_is_the_same_everywhere() -> None:
    labels = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    outputs = labels.clone()
    labels[0, 0, 2:5, 2:5, 2:5] = 1  # class 1 present in case 0 only, class 2 nowhere
    outputs[0, 0, 2:5, 2:5, 2:6] = 1
    outputs[1, 0, 0, 0, 0] = 1  # false positive where the label is empty
    values = dice_similarity_coefficient(outputs, labels, num_classes=3, reduction="none")
    assert values[0, 0] == pytest.approx(2 * 27 / (27 + 36))
    assert values[1, 0] == 0  # present on one side only: 0 (MONAI's default would say NaN)
    assert (values[:, 1] == 1).all()  # absent on both sides: if_empty
    # the mean is the mean of the per-class values (the reference scored empty classes 0 in the mean only)
    assert dice_similarity_coefficient(outputs, labels, num_classes=3).item() == pytest.approx(values.mean().item())
    ignored = dice_similarity_coefficient(outputs, labels, num_classes=3, if_empty=math.nan, reduction="none")
    assert ignored[:, 1].isnan().all()
    assert dice_similarity_coefficient(outputs, labels, num_classes=3, if_empty=math.nan).item() == pytest.approx(
        values[:, 0].mean().item())
    assert iou(outputs, labels, num_classes=3, reduction="none")[:, 1].eq(1).all()
    both_empty = torch.zeros(4, 4, dtype=torch.bool)
    assert binary_dice(both_empty, both_empty, if_empty=0.5).item() == 0.5


def test_background_is_scored_only_on_request() -> None:
    labels = label_map((12, 12, 12), 6)[None]
    outputs = morph(labels[0], "dilated")[None]
    foreground = dice_similarity_coefficient(outputs, labels, spatial_dims=3, reduction="none")
    everything = dice_similarity_coefficient(outputs, labels, spatial_dims=3, include_background=True,
                                             reduction="none")
    assert foreground.shape == (2,) and everything.shape == (3,)
    torch.testing.assert_close(everything[1:], foreground)


@pytest.mark.parametrize("reduction", ["mean", "median", "sum", "none"])
def test_reductions_ignore_nan(reduction: str) -> None:
    labels = torch.zeros(4, 1, 6, 6, dtype=torch.long)
    outputs = torch.zeros_like(labels)
    for case in range(3):
        labels[case, 0, : case + 2, :3] = 1
        outputs[case, 0, 1 : case + 3, :3] = 1
    options = {"if_empty": math.nan, "spatial_dims": 2}
    values = dice_similarity_coefficient(outputs, labels, reduction="none", **options).numpy()
    result = dice_similarity_coefficient(outputs, labels, reduction=reduction, **options).numpy()
    expected = {"mean": np.nanmean, "median": np.nanmedian, "sum": np.nansum, "none": lambda v: v}[reduction](values)
    np.testing.assert_allclose(result, expected, rtol=1e-6, equal_nan=True)


def test_soft_dice_matches_formula_and_hard_dice() -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 10, 12, generator=generator, requires_grad=True)
    probabilities = logits.softmax(1)
    labels = torch.randint(0, 3, (2, 1, 10, 12), generator=generator)
    hot = one_hot(labels, 3)
    for batch_dice in (True, False):
        values = soft_dice(probabilities, labels, smooth=1.0, batch_dice=batch_dice, reduction="none", spatial_dims=2)
        dims = (0, 2, 3) if batch_dice else (2, 3)
        p, h = probabilities.detach().double(), hot.double()
        expected = (2 * (p * h).sum(dims) + 1) / (p.sum(dims) + h.sum(dims) + 1)
        torch.testing.assert_close(values.double(), expected, atol=1e-6, rtol=0)
        from_hot = soft_dice(probabilities, hot, batch_dice=batch_dice, reduction="none", spatial_dims=2)
        torch.testing.assert_close(values, from_hot)
    soft_dice(probabilities, labels, spatial_dims=2).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    hard = one_hot(labels.roll(1, -1), 3)
    torch.testing.assert_close(soft_dice(hard, labels, smooth=0.0, batch_dice=False, reduction="none", spatial_dims=2),
                               dice_similarity_coefficient(hard, hot, reduction="none", spatial_dims=2))
    empty = torch.zeros(2, 4, 4)
    assert soft_dice(empty, empty, smooth=0.0, if_empty=1.0, spatial_dims=2).item() == 1.0


def test_spacing_does_not_change_overlap() -> None:
    """Dice is a ratio of voxel counts on one grid: the documented reason it takes no spacing."""
    labels = label_map((10, 30, 30), 8)
    outputs = morph(labels, "shifted")
    counts = [(outputs == k).sum() for k in (1, 2)], [(labels == k).sum() for k in (1, 2)]
    both = [((outputs == k) & (labels == k)).sum() for k in (1, 2)]
    volume = 3.0 * 0.8 * 0.8  # anisotropic voxel volume: scales every count, cancels in the ratio
    expected = [2 * b * volume / ((o + g) * volume) for b, o, g in zip(both, *counts, strict=True)]
    torch.testing.assert_close(dice_similarity_coefficient(outputs, labels, spatial_dims=3, reduction="none"),
                               torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: binary_dice(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5)), "same shape"),
        (lambda: binary_dice(torch.zeros(4, 4), torch.zeros(4, 4, device="meta")), "move both to one device"),
        (lambda: binary_dice(torch.full((4, 4), 0.7), torch.zeros(4, 4)), "threshold probabilities"),
        (lambda: binary_dice(torch.full((4, 4), math.nan), torch.zeros(4, 4)), "only 0 and 1"),
        (lambda: binary_dice(torch.full((4, 4), 2), torch.zeros(4, 4, dtype=torch.long)), "only 0 and 1"),
        (lambda: dice_similarity_coefficient(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4)),
         "both be label maps"),
        (lambda: dice_similarity_coefficient(torch.zeros(2, 4, 4, 4, dtype=torch.long),
                                             torch.zeros(2, 4, 4, 4, dtype=torch.long), spatial_dims=2),
         "single channel"),
        (lambda: dice_similarity_coefficient(torch.full((4, 4), 5), torch.zeros(4, 4, dtype=torch.long),
                                             num_classes=3), r"\[0, 3\)"),
        (lambda: dice_similarity_coefficient(torch.full((4, 4), -1), torch.zeros(4, 4, dtype=torch.long)),
         "class ids"),
        (lambda: iou(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long), num_classes=1),
         "no class to score"),
        (lambda: binary_dice(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)), r"ambiguous: \(B, C, H, W\)"),
        (lambda: binary_dice(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)), r"ambiguous: \(C, H, W\)"),
        (lambda: binary_dice(torch.zeros(4, 4), torch.zeros(4, 4), reduction="avg"), "reduction must be"),
        (lambda: binary_dice(torch.zeros(1, 1, 1, 4, 4), torch.zeros(1, 1, 1, 4, 4), spatial_dims=2),
         "2 to 4 dimensions"),
        (lambda: binary_dice(torch.zeros(4, 4), torch.zeros(4, 4), spatial_dims=1), "must be 2 or 3"),
        (lambda: binary_dice([[0, 1]], torch.zeros(1, 2)), "torch.Tensor"),
        (lambda: binary_dice(torch.zeros(0, 4), torch.zeros(0, 4)), "nothing to score"),
        (lambda: soft_dice(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long)),
         "floating-point outputs"),
        (lambda: soft_dice(torch.rand(2, 4, 4), torch.full((1, 4, 4), 2), spatial_dims=2), r"\[0, 2\)"),
        (lambda: soft_dice(torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.long), spatial_dims=2), "sigmoid"),
        (lambda: soft_dice(torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 4, 5, dtype=torch.long), spatial_dims=2),
         "must have shape"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call()
