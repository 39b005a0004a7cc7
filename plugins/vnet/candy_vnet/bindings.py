"""The trainer and predictor bound to this bundle by name."""
from __future__ import annotations

from mipcandy import Predictor, SegmentationTrainer


class VNetTrainer(SegmentationTrainer):
    bundle = "vnet"


class VNetPredictor(Predictor):
    bundle = "vnet"
