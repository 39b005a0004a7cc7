"""Training building blocks: segmentation losses, deep supervision, the poly schedule and a weight EMA."""
from mipcandy.common.optim.ema import ExponentialMovingAverage
from mipcandy.common.optim.loss import (
    ComponentLoss,
    DeepSupervisionWrapper,
    DiceBCELossWithLogits,
    DiceCELossWithLogits,
    deep_supervision_weights,
    downsample_targets,
    segmentation_loss,
    soft_dice,
)
from mipcandy.common.optim.lr_scheduler import PolyLRScheduler

__all__ = [
    "ComponentLoss",
    "DeepSupervisionWrapper",
    "DiceBCELossWithLogits",
    "DiceCELossWithLogits",
    "ExponentialMovingAverage",
    "PolyLRScheduler",
    "deep_supervision_weights",
    "downsample_targets",
    "segmentation_loss",
    "soft_dice",
]
