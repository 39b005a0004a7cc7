"""The trainer and predictor bound to this bundle by name."""
from __future__ import annotations

from mipcandy import Predictor, SegmentationTrainer


class MedNeXtTrainer(SegmentationTrainer):
    bundle = "mednext"


class MedNeXtPredictor(Predictor):
    bundle = "mednext"
