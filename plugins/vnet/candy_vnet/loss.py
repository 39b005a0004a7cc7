"""V-Net's objective: the soft Dice of Milletari et al. (2016), eq. 1, with squared terms in the denominator.

``D = 2 * sum(p * g) / (sum(p ** 2) + sum(g ** 2))`` per sample and foreground class, where ``p`` are the
predicted probabilities (softmax over the classes, or the sigmoid of one channel) and ``g`` the binary reference.
The loss is ``1 - mean D``. As in the authors' Caffe layer, each sample of the batch gets its own Dice; the
background channel is left out. ``smooth`` (added to numerator and denominator) only keeps an absent class
from dividing by zero.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, *, smooth: float = SMOOTH) -> torch.Tensor:
    """``1 - mean Dice`` of ``logits`` (B, C, *spatial) against class ids ``labels`` (B, 1, *spatial).

    One channel (``C == 1``) is a sigmoid foreground against the mask ``labels == 1``; several channels are a
    softmax whose foreground channels 1..C-1 are compared with the one-hot labels.
    """
    if logits.ndim < 3 or labels.shape != (logits.shape[0], 1, *logits.shape[2:]):
        raise ValueError(f"dice_loss: labels of shape {tuple(labels.shape)} do not fit logits of shape "
                         f"{tuple(logits.shape)}; pass class ids shaped (B, 1, *spatial) with the logits' sizes")
    num_classes = logits.shape[1]
    low, high = torch.stack(list(torch.aminmax(labels))).tolist()
    if low < 0 or high > max(num_classes - 1, 1):
        raise ValueError(f"dice_loss: class ids span {low}..{high}, but the logits have {num_classes} channel(s) "
                         f"(ids 0..{max(num_classes - 1, 1)})")
    logits, labels = logits.float(), labels.long()
    if num_classes == 1:
        probs, reference = logits.sigmoid(), (labels == 1).float()
    else:
        probs = logits.softmax(1)[:, 1:]
        reference = F.one_hot(labels[:, 0], num_classes).movedim(-1, 1)[:, 1:].float()
    axes = tuple(range(2, logits.ndim))
    intersection = (probs * reference).sum(axes)
    denominator = (probs * probs).sum(axes) + (reference * reference).sum(axes)
    return 1 - ((2 * intersection + smooth) / (denominator + smooth)).mean()
