"""Overlap metrics per (case, class): Dice, IoU and the differentiable soft Dice.

Input layouts are described in :mod:`mipcandy.metrics._layout`: ``(*spatial)``, ``(C, *spatial)`` or
``(B, C, *spatial)``; integer tensors are label maps, bool/float tensors are 0/1 masks. Results have one
value per (case, class): ``reduction="none"`` returns ``(B, C)`` for batched input and ``(C,)`` otherwise.
Every reduction skips NaN, so ``if_empty=float("nan")`` leaves classes absent from both sides out.

Empty-class rules (one rule everywhere): a class absent from both prediction and reference scores
``if_empty`` (default 1); a class present on one side only scores 0.

Differences from MONAI (``DiceMetric``/``MeanIoU``, which we match value for value otherwise):

* MONAI's default ``ignore_empty=True`` returns NaN whenever the *reference* is empty, even if the
  prediction is not, which hides false positives; we return 0 there. ``ignore_empty=False`` gives our
  values with ``if_empty=1``.
* ``include_background`` only applies to label maps, where id 0 is the background; it defaults to
  ``False`` (foreground classes, as nnU-Net reports). Mask channels are all scored as given; slice them
  to leave one out. MONAI drops channel 0 of one-hot input and includes it by default.
* The ``"mean"`` reduction is the NaN-ignoring mean over all (case, class) values; MONAI's first
  averages classes per case, then cases, which weighs cases with NaN classes differently.

Voxel spacing does not enter: on one grid, Dice and IoU are ratios of voxel counts and the voxel volume
cancels out, so anisotropic spacing gives the same values.
"""
from __future__ import annotations

from torch import Tensor

from mipcandy.metrics._layout import (
    check_pair,
    is_label_map,
    parse_segmentations,
    resolve_spatial_dims,
    single_threaded_torch,
    to_batch,
)
from mipcandy.metrics._reduction import Reduction, check_reduction, reduce_values

__all__ = ["binary_dice", "dice_similarity_coefficient", "iou", "soft_dice"]


def _ratio(numerator: Tensor, denominator: Tensor, if_empty: float) -> Tensor:
    """``numerator / denominator`` with ``if_empty`` where the denominator is 0 (class absent on both sides)."""
    values = numerator.float() / denominator.float().clamp(min=1)
    return values.masked_fill(denominator == 0, if_empty)


def _overlap(
    outputs: Tensor,
    labels: Tensor,
    *,
    iou: bool,
    binary: bool,
    num_classes: int | None,
    include_background: bool,
    if_empty: float,
    reduction: Reduction,
    spatial_dims: int | None,
) -> Tensor:
    check_reduction(reduction)
    with single_threaded_torch():
        segmentations, _ = parse_segmentations(
            outputs,
            labels,
            num_classes=num_classes,
            include_background=include_background,
            spatial_dims=spatial_dims,
            binary=binary,
        )
        tp, predicted, reference = segmentations.counts()
    total = predicted + reference
    values = _ratio(tp, total - tp, if_empty) if iou else _ratio(2 * tp, total, if_empty)
    return reduce_values(values if segmentations.batched else values[0], reduction)


def binary_dice(
    outputs: Tensor,
    labels: Tensor,
    *,
    if_empty: float = 1.0,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> Tensor:
    """Dice of binary masks, each channel scored on its own.

    Masks may be bool, integer or float tensors holding only 0 and 1, in any layout (a multi-channel
    input is a stack of independent binary masks).
    """
    return _overlap(
        outputs,
        labels,
        iou=False,
        binary=True,
        num_classes=None,
        include_background=True,
        if_empty=if_empty,
        reduction=reduction,
        spatial_dims=spatial_dims,
    )


def dice_similarity_coefficient(
    outputs: Tensor,
    labels: Tensor,
    *,
    num_classes: int | None = None,
    include_background: bool = False,
    if_empty: float = 1.0,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> Tensor:
    """Multi-class Dice ``2TP / (2TP + FP + FN)`` per (case, class).

    Takes label maps (integer ids, one channel; ``num_classes`` defaults to the largest id + 1, at least 2)
    or one-hot masks (one channel per class).
    """
    return _overlap(
        outputs,
        labels,
        iou=False,
        binary=False,
        num_classes=num_classes,
        include_background=include_background,
        if_empty=if_empty,
        reduction=reduction,
        spatial_dims=spatial_dims,
    )


def iou(
    outputs: Tensor,
    labels: Tensor,
    *,
    num_classes: int | None = None,
    include_background: bool = False,
    if_empty: float = 1.0,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> Tensor:
    """Intersection over union (Jaccard) ``TP / (TP + FP + FN)`` per (case, class); inputs as for Dice."""
    return _overlap(
        outputs,
        labels,
        iou=True,
        binary=False,
        num_classes=num_classes,
        include_background=include_background,
        if_empty=if_empty,
        reduction=reduction,
        spatial_dims=spatial_dims,
    )


def _soft_sums(outputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per (case, channel) intersection and reference sums, for one-hot/soft or label-map references."""
    dims = tuple(range(2, outputs.ndim))
    if not is_label_map(labels):
        return (outputs * labels).sum(dims), labels.to(outputs.dtype).sum(dims)
    channels = outputs.shape[1]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= channels:
        hint = "; for a one-channel (sigmoid) output pass the labels as a bool or float mask" if channels == 1 else ""
        raise ValueError(f"label ids must lie in [0, {channels}) to index output channels, found {low}..{high}{hint}")
    ids = labels.flatten(2).long()
    picked = outputs.flatten(2).gather(1, ids)[:, 0]
    zeros = outputs.new_zeros(outputs.shape[:2])
    ones = picked.new_ones(()).expand_as(picked)
    return zeros.scatter_add(1, ids[:, 0], picked), zeros.scatter_add(1, ids[:, 0], ones)


def soft_dice(
    outputs: Tensor,
    labels: Tensor,
    *,
    smooth: float = 1.0,
    batch_dice: bool = True,
    if_empty: float = 1.0,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> Tensor:
    """Differentiable Dice ``(2I + smooth) / (sum(outputs) + sum(labels) + smooth)`` per class.

    ``outputs`` are floating probabilities with one channel per class. ``labels`` are a label map (integer
    ids, one channel) or one-hot/soft targets of the outputs' shape. With ``batch_dice`` the sums run over
    the whole batch (one value per class, as nnU-Net trains), else per case. A class with both sums 0
    scores ``if_empty``.
    """
    check_reduction(reduction)
    if not isinstance(outputs, Tensor) or not outputs.is_floating_point():
        found = getattr(outputs, "dtype", type(outputs).__name__)
        raise TypeError(f"soft_dice needs floating-point outputs (probabilities), got {found}")
    dims = resolve_spatial_dims(outputs, spatial_dims, None)
    if isinstance(labels, Tensor) and is_label_map(labels) and labels.ndim == outputs.ndim and labels.ndim > dims:
        channel = labels.ndim - dims - 1
        expected = outputs.shape[:channel] + (1,) + outputs.shape[channel + 1 :]
        if labels.shape != expected:
            raise ValueError(
                f"a label map for outputs of shape {tuple(outputs.shape)} must have shape {tuple(expected)}, "
                f"got {tuple(labels.shape)}"
            )
    else:
        check_pair(outputs, labels)
    if outputs.device != labels.device:
        raise ValueError(f"outputs are on {outputs.device} but labels on {labels.device}; move both to one device")
    batched = outputs.ndim - dims == 2
    intersection, reference = _soft_sums(to_batch(outputs, dims), to_batch(labels, dims))
    predicted = to_batch(outputs, dims).sum(tuple(range(2, dims + 2)))
    if batch_dice or not batched:
        intersection, reference, predicted = intersection.sum(0), reference.sum(0), predicted.sum(0)
    total = predicted + reference
    values = ((2 * intersection + smooth) / (total + smooth)).masked_fill(total == 0, if_empty)
    return reduce_values(values, reduction)
