"""The trainer and predictor bound to this bundle by name."""
from __future__ import annotations

from mipcandy import SegmentationTrainer
from mipcandy.inference import Predictor


class UNetPPTrainer(SegmentationTrainer):
    bundle = "unetpp"


class UNetPPPredictor(Predictor):
    bundle = "unetpp"
