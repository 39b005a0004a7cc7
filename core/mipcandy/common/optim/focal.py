"""Sigmoid focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection") for one-channel outputs.

It down-weights voxels the network already gets right, ``(1 - p_t)^gamma``, so that the rare hard voxels of a
small foreground are not drowned by easy background: an alternative to Dice + BCE for very small structures.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FocalBCEWithLogits"]

Reduction = Literal["mean", "sum", "none"]


class FocalBCEWithLogits(nn.Module):
    """``alpha_t · (1 - p_t)^gamma · BCE(logits, target)`` per element, reduced by ``reduction``.

    ``p = sigmoid(logits)``, ``p_t = p`` where the target is 1 and ``1 - p`` where it is 0 (soft targets
    interpolate), ``alpha_t = alpha`` for foreground and ``1 - alpha`` for background; a negative ``alpha``
    disables the weighting. The defaults (alpha 0.25, gamma 2) are the paper's and ``torchvision.ops.
    sigmoid_focal_loss``'s; gamma 0 with alpha < 0 is plain BCE. Returns a bare tensor, like torch's losses.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        if alpha > 1:
            raise ValueError(f"alpha must be at most 1 (a negative value disables it), got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.alpha, self.gamma, self.reduction = float(alpha), float(gamma), reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"FocalBCEWithLogits: logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                             "must have the same shape (one sigmoid channel and its 0/1 mask)")
        target = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = logits.sigmoid()
        miss = p + target - 2 * p * target  # 1 - p_t
        loss = bce * miss.clamp_min(0) ** self.gamma
        if self.alpha >= 0:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"
