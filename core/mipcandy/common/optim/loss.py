"""Segmentation losses (soft Dice + cross-entropy, as nnU-Net's ``DC_and_CE_loss``) and deep supervision.

Every loss returns ``(loss, metrics)``: the differentiable total and a dict of detached floats holding its
components plus ``"loss"`` (the total's value). The components are kept as tensors in ``terms()`` and turned
into floats once per call, so that a call costs a single device synchronisation for its metrics.

Convention: the Dice part enters as ``1 - soft Dice`` (non-negative, 0 for a perfect prediction), whereas
nnU-Net adds ``-soft Dice``. The two differ by the constant ``lambda_dice``, so gradients are identical.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Metrics = dict[str, float]
Terms = dict[str, torch.Tensor]


def soft_dice(probs: torch.Tensor, reference: torch.Tensor, *, batch_dice: bool, smooth: float) -> torch.Tensor:
    """Soft Dice ``(2|X·Y| + smooth) / (|X| + |Y| + smooth)`` per class (nnU-Net's formulation).

    ``probs`` and ``reference`` are (B, C, *spatial). With ``batch_dice`` the sums pool the whole batch, giving
    one value per class (C,); otherwise one value per sample and class (B, C).
    """
    axes = tuple(range(2, probs.ndim))
    if batch_dice:
        axes = (0, *axes)
    intersection = (probs * reference).sum(axes)
    denominator = probs.sum(axes) + reference.sum(axes)
    return (2 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)


def metrics_to_floats(terms: Terms) -> Metrics:
    """Detach the metric tensors and read them back in one synchronisation."""
    if not terms:
        return {}
    values = torch.stack([value.detach().reshape(()) for value in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


def _promoted(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32, so that the loss sums stay accurate; float32 and float64 unchanged."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _label_map(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Check ``target`` against ``logits`` (B, C, *spatial) and return it as (B, 1, *spatial)."""
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.shape[:1] + target.shape[2:] != logits.shape[:1] + logits.shape[2:] or target.shape[1] != 1:
        raise ValueError(f"target of shape {tuple(target.shape)} does not fit logits of shape {tuple(logits.shape)}: "
                         "pass one label map per sample, shaped (B, 1, *spatial) or (B, *spatial), with the "
                         "logits' batch and spatial sizes")
    return target


def _check_range(target: torch.Tensor, low: float, high: float, what: str) -> None:
    """Fail clearly (instead of a device-side assert) when label values fall outside [low, high]."""
    lo, hi = torch.aminmax(target if target.is_floating_point() else target.long())
    lo_value, hi_value = torch.stack([lo, hi]).tolist()
    if lo_value < low or hi_value > high:
        raise ValueError(f"target values span {lo_value:g}..{hi_value:g}, but {what}; check the label maps "
                         "(or the number of classes the loss was built for)")


class ComponentLoss(nn.Module):
    """A loss whose ``terms()`` gives the total and its components as tensors; ``forward`` adds float metrics."""

    def terms(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        """Return the differentiable total and its components (tensors, not yet detached)."""
        raise NotImplementedError

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        loss, parts = self.terms(output, target)
        return loss, metrics_to_floats({**parts, "loss": loss})


class _DiceWithCrossEntropy(ComponentLoss):
    """``lambda_xent * cross-entropy + lambda_dice * (1 - mean soft Dice)``; subclasses pick the activation."""

    xent_name: str

    def __init__(self, lambda_xent: float, lambda_dice: float, smooth: float, batch_dice: bool) -> None:
        super().__init__()
        if lambda_xent < 0 or lambda_dice < 0:
            raise ValueError(f"loss weights must be non-negative, got {lambda_xent} and {lambda_dice}")
        self.lambda_xent, self.lambda_dice = float(lambda_xent), float(lambda_dice)
        self.smooth, self.batch_dice = float(smooth), batch_dice

    def parts(self, logits: torch.Tensor,
              target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (cross-entropy, probabilities, reference) with the Dice channels already selected."""
        raise NotImplementedError

    def terms(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        xent, probs, reference = self.parts(output, _label_map(output, target))
        dice = soft_dice(probs, reference, batch_dice=self.batch_dice, smooth=self.smooth).mean()
        loss = self.lambda_xent * xent + self.lambda_dice * (1 - dice)
        return loss, {self.xent_name: xent, "soft dice": dice}


class DiceCELossWithLogits(_DiceWithCrossEntropy):
    """Multi-class loss on raw logits (B, C, *spatial) against integer class ids (B, 1, *spatial).

    Cross-entropy on the logits plus ``1 - soft Dice`` on the softmax. As in nnU-Net, the background channel
    is left out of the Dice by default and ``batch_dice`` pools the batch before dividing (use False when
    samples differ a lot, e.g. nnU-Net's low-resolution stage). Metrics: ``"ce loss"``, ``"soft dice"``, ``"loss"``.
    """

    xent_name = "ce loss"

    def __init__(self, num_classes: int, *, lambda_ce: float = 1, lambda_dice: float = 1, smooth: float = 1e-5,
                 include_background: bool = False, batch_dice: bool = True) -> None:
        if num_classes < 2:
            raise ValueError(f"DiceCELossWithLogits needs num_classes >= 2 (softmax channels), got {num_classes}; "
                             "use DiceBCELossWithLogits for one sigmoid channel")
        super().__init__(lambda_ce, lambda_dice, smooth, batch_dice)
        self.num_classes, self.include_background = num_classes, include_background

    def parts(self, logits: torch.Tensor,
              target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, but the loss was built for "
                             f"num_classes={self.num_classes}")
        _check_range(target, 0, self.num_classes - 1, f"class ids must lie in 0..{self.num_classes - 1}")
        target, logits = target.long(), _promoted(logits)
        ce = F.cross_entropy(logits, target[:, 0])
        probs = logits.softmax(1)
        onehot = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, target, True)
        first = 0 if self.include_background else 1
        return ce, probs[:, first:], onehot[:, first:]


class DiceBCELossWithLogits(_DiceWithCrossEntropy):
    """Binary loss on one logit channel (B, 1, *spatial) against a 0/1 (or soft) foreground mask.

    Binary cross-entropy on the logit plus ``1 - soft Dice`` of the sigmoid against the mask (the single channel
    is the foreground, so there is no background to exclude). Metrics: ``"bce loss"``, ``"soft dice"``, ``"loss"``.
    """

    xent_name = "bce loss"

    def __init__(self, *, lambda_bce: float = 1, lambda_dice: float = 1, smooth: float = 1e-5,
                 batch_dice: bool = True) -> None:
        super().__init__(lambda_bce, lambda_dice, smooth, batch_dice)

    def parts(self, logits: torch.Tensor,
              target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if logits.shape[1] != 1:
            raise ValueError(f"DiceBCELossWithLogits expects one logit channel, got {logits.shape[1]}; "
                             "use DiceCELossWithLogits for several classes")
        _check_range(target, 0, 1, "a binary mask must hold values in 0..1")
        logits = _promoted(logits)
        reference = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, reference)
        return bce, logits.sigmoid(), reference


def segmentation_loss(num_classes: int, *, lambda_ce: float = 1, lambda_dice: float = 1, smooth: float = 1e-5,
                      include_background: bool = False, batch_dice: bool = True) -> ComponentLoss:
    """The loss for a network with ``num_classes`` output channels.

    One channel means a sigmoid foreground output (Dice + BCE; ``lambda_ce`` weighs the BCE and
    ``include_background`` does not apply); two or more mean softmax classes (Dice + CE).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if num_classes == 1:
        return DiceBCELossWithLogits(lambda_bce=lambda_ce, lambda_dice=lambda_dice, smooth=smooth,
                                     batch_dice=batch_dice)
    return DiceCELossWithLogits(num_classes, lambda_ce=lambda_ce, lambda_dice=lambda_dice, smooth=smooth,
                                include_background=include_background, batch_dice=batch_dice)


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's head weights: ``1/2^i`` (full resolution first), the lowest resolution set to 0, summing to 1."""
    if num_outputs < 1:
        raise ValueError(f"deep supervision needs at least one output, got {num_outputs}")
    weights = [0.5 ** i for i in range(num_outputs)]
    if num_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_targets(target: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Label maps (B, 1, *spatial) resized to each spatial shape with centre-aligned nearest neighbours.

    ``nearest-exact`` samples the voxel whose centre is closest, so labels are never invented nor shifted
    towards a corner; each scale takes one interpolation of the full-resolution map.
    """
    as_float = None
    resized = []
    for shape in shapes:
        if tuple(shape) == tuple(target.shape[2:]):
            resized.append(target)
            continue
        if as_float is None:
            as_float = target.float()
        resized.append(F.interpolate(as_float, size=tuple(shape), mode="nearest-exact").to(target.dtype))
    return resized


class DeepSupervisionWrapper(ComponentLoss):
    """Applies a ``ComponentLoss`` to every head of a deep-supervised network and sums the weighted losses.

    ``outputs`` is a sequence of logits, full resolution first, or a tensor (B, S, C, *spatial) stacking S heads
    (as MONAI's DynUNet returns in training). The full-resolution target is resized to each head with
    ``downsample_targets``; heads with weight 0 are neither resized for nor evaluated. ``weights=None`` uses
    ``deep_supervision_weights`` for the number of heads. Metrics are the full-resolution head's components
    plus ``"loss"``, the weighted total.
    """

    def __init__(self, loss: ComponentLoss, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not callable(getattr(loss, "terms", None)):
            raise TypeError(f"{type(loss).__name__} has no terms(output, target) method; "
                            "wrap a ComponentLoss such as DiceCELossWithLogits")
        if weights is not None and (not weights or any(w < 0 for w in weights)):
            raise ValueError(f"deep supervision weights must be a non-empty list of non-negative numbers, "
                             f"got {list(weights)}")
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def terms(self, output: torch.Tensor | Sequence[torch.Tensor],
              target: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        heads = list(output.unbind(1) if isinstance(output, torch.Tensor) else output)
        weights = self.weights or deep_supervision_weights(len(heads))
        if len(weights) != len(heads):
            raise ValueError(f"the network returned {len(heads)} deep supervision outputs, but {len(weights)} "
                             "weights were given")
        if target.ndim == heads[0].ndim - 1:
            target = target.unsqueeze(1)
        if target.ndim != heads[0].ndim:
            raise ValueError(f"target of shape {tuple(target.shape)} does not fit the full-resolution output of "
                             f"shape {tuple(heads[0].shape)}; outputs must be a list of heads (full resolution "
                             "first) or a tensor (B, S, C, *spatial)")
        used = [i for i, w in enumerate(weights) if w != 0 or i == 0]
        targets = downsample_targets(target, [heads[i].shape[2:] for i in used])
        total: torch.Tensor | None = None
        parts: Terms = {}
        for i, head_target in zip(used, targets, strict=True):
            loss, head_parts = self.loss.terms(heads[i], head_target)
            if i == 0:
                parts = head_parts
            total = weights[i] * loss if total is None else total + weights[i] * loss
        assert total is not None
        return total, parts
