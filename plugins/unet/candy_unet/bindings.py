"""Named bindings of the U-Net bundle for Python users who follow the paper's trainer-predictor pattern.

They hold no logic: every behaviour of the bundle lives in its hooks (:mod:`candy_unet.hooks`).
"""
from __future__ import annotations

from mipcandy import Predictor, SegmentationTrainer


class UNetTrainer(SegmentationTrainer):
    """The segmentation preset training the ``unet`` bundle's network."""

    bundle = "unet"


class UNetPredictor(Predictor):
    """The predictor of experiments trained with the ``unet`` bundle."""

    bundle = "unet"
