"""Training building blocks: segmentation and focal losses, deep supervision, lr schedules and a weight EMA."""
from mipcandy.common.optim.ema import ExponentialMovingAverage
from mipcandy.common.optim.focal import FocalBCEWithLogits
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
from mipcandy.common.optim.lr_scheduler import AbsoluteLinearLR, PolyLRScheduler

__all__ = [
    "AbsoluteLinearLR",
    "ComponentLoss",
    "DeepSupervisionWrapper",
    "DiceBCELossWithLogits",
    "DiceCELossWithLogits",
    "ExponentialMovingAverage",
    "FocalBCEWithLogits",
    "PolyLRScheduler",
    "deep_supervision_weights",
    "downsample_targets",
    "segmentation_loss",
    "soft_dice",
]
