"""Sigmoid focal loss against its formula (Lin et al. 2017, as torchvision.ops.sigmoid_focal_loss computes it) and
against MONAI's FocalLoss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import FocalLoss

from mipcandy.common.optim.focal import FocalBCEWithLogits


def reference_focal(inputs: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float,
                    reduction: str) -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss's formula, written out (torchvision is not installed)."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, 1, 6, 7, 8, generator=generator, dtype=torch.float64)
    return logits, (torch.rand(logits.shape, generator=generator, dtype=torch.float64) < 0.3).double()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.5)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_the_formula(alpha: float, gamma: float, reduction: str) -> None:
    logits, target = batch()
    ours = FocalBCEWithLogits(alpha, gamma, reduction=reduction)(logits, target)
    torch.testing.assert_close(ours, reference_focal(logits, target, alpha, gamma, reduction))


def test_soft_targets_and_gradients_match_the_formula() -> None:
    logits, _ = batch(1)
    target = torch.rand(logits.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    FocalBCEWithLogits()(ours_in, target).backward()
    reference_focal(ref_in, target, 0.25, 2.0, "mean").backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad)


def test_matches_monai() -> None:
    logits, target = batch(3)
    monai = FocalLoss(use_softmax=False, gamma=2.0, alpha=0.25, reduction="mean")(logits, target)
    torch.testing.assert_close(FocalBCEWithLogits(0.25, 2.0)(logits, target).float(), monai)  # MONAI: float32


def test_gamma_zero_without_alpha_is_bce() -> None:
    logits, target = batch(4)
    torch.testing.assert_close(FocalBCEWithLogits(-1, 0)(logits, target),
                               F.binary_cross_entropy_with_logits(logits, target))


def test_integer_masks_and_errors() -> None:
    logits, target = batch(5)
    torch.testing.assert_close(FocalBCEWithLogits()(logits, target.long()), FocalBCEWithLogits()(logits, target))
    with pytest.raises(ValueError, match="same shape"):
        FocalBCEWithLogits()(logits, target[:, 0])
    with pytest.raises(ValueError, match="gamma"):
        FocalBCEWithLogits(gamma=-1)
    with pytest.raises(ValueError, match="reduction"):
        FocalBCEWithLogits(reduction="median")  # type: ignore[arg-type]
