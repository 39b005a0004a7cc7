"""The trainer and predictor bound to this bundle by name."""
from __future__ import annotations

from mipcandy import SegmentationTrainer
from mipcandy.inference import Predictor


class UNETRTrainer(SegmentationTrainer):
    bundle = "unetr"


class UNETRPredictor(Predictor):
    bundle = "unetr"
