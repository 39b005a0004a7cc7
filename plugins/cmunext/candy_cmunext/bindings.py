"""The named trainer and predictor of the CMUNeXt bundle."""
from mipcandy import Predictor, SegmentationTrainer


class CMUNeXtTrainer(SegmentationTrainer):
    bundle = "cmunext"


class CMUNeXtPredictor(Predictor):
    bundle = "cmunext"
