"""The named trainer and predictor of the CMUNeXt bundle."""
from mipcandy import SegmentationTrainer
from mipcandy.inference import Predictor


class CMUNeXtTrainer(SegmentationTrainer):
    bundle = "cmunext"


class CMUNeXtPredictor(Predictor):
    bundle = "cmunext"
