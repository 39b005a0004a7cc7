"""The named trainer and predictor of the MONAI bridge."""
from mipcandy import Predictor, SegmentationTrainer


class MONAITrainer(SegmentationTrainer):
    bundle = "monai"


class MONAIPredictor(Predictor):
    bundle = "monai"
