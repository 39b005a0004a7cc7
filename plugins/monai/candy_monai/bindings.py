"""The named trainer and predictor of the MONAI bridge."""
from mipcandy import SegmentationTrainer
from mipcandy.inference import Predictor


class MONAITrainer(SegmentationTrainer):
    bundle = "monai"


class MONAIPredictor(Predictor):
    bundle = "monai"
