"""The segmentation preset: nnU-Net's training recipe, with the network the only thing left to choose.

Loss: Dice + CE for softmax classes, Dice + BCE for one sigmoid channel (picked from ``num_classes``), wrapped
for deep supervision with nnU-Net's head weights when ``deep_supervision`` is on. Optimizer: SGD lr 1e-2,
momentum 0.99, Nesterov, weight decay 3e-5; poly 0.9 per epoch; gradient norm clipped at 12 (after unscaling).
Validation: whole cases through Gaussian sliding windows of the training patch size, then per-class Dice of the
argmax (or of logit > 0, i.e. sigmoid > 0.5, for one channel); the case score is the mean foreground Dice
(``score="negative_loss"`` uses minus the case's loss instead).
"""
from __future__ import annotations

import torch
from torch import nn

from mipcandy.common.optim import DeepSupervisionWrapper, segmentation_loss
from mipcandy.data.postprocess import logits_to_labels
from mipcandy.data.sliding_window import sliding_window_inference
from mipcandy.training.toolbox import TrainerToolbox
from mipcandy.training.trainer import Trainer
from mipcandy.training.validation import CaseResult, foreground_dice, to_cpu_label


class SegmentationTrainer(Trainer):
    """nnU-Net's segmentation recipe; implement ``build_network`` or select a ``bundle``.

    The options ``include_background`` (the background channel in the Dice part of a multi-class loss; nnU-Net:
    off) and ``deep_supervision_weights`` (full resolution first; default nnU-Net's ``1/2^i`` with the lowest
    resolution at 0, sized from the network's outputs) shape the loss, and are recorded with the other options.
    """

    def build_criterion(self) -> nn.Module:
        options = self.options
        loss = segmentation_loss(options.num_classes, include_background=options.include_background)
        if not options.deep_supervision:
            return loss
        return DeepSupervisionWrapper(loss, options.deep_supervision_weights)

    @staticmethod
    def case_loss(criterion: nn.Module) -> nn.Module:
        """The loss of one full-resolution output (the deep supervision wrapper's inner loss)."""
        return criterion.loss if isinstance(criterion, DeepSupervisionWrapper) else criterion

    def predict_case(self, image: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """Logits ``(num_classes, *spatial)`` of a whole case: Gaussian sliding windows of the patch size."""
        options = self.options
        with self.autocast():
            return sliding_window_inference(image, model, self.patch_size, overlap=options.sliding_window_overlap,
                                            batch_size=options.sliding_window_batch_size, device=self.device,
                                            num_classes=options.num_classes)

    def validate_case(self, case_id: str, image: torch.Tensor, label: torch.Tensor,
                      toolbox: TrainerToolbox) -> CaseResult:
        options = self.options
        logits = self.predict_case(image, toolbox.validation_model)
        label = label.to(logits.device)
        prediction = logits_to_labels(logits)
        dice = foreground_dice(prediction, label, options.num_classes).tolist()
        names = self.class_names()
        metrics = {f"dice {names.get(k, str(k))}": value for k, value in enumerate(dice, start=1)}
        loss, _ = self.case_loss(toolbox.criterion)(logits[None], label[None])
        metrics["loss"] = float(loss)
        score = sum(dice) / len(dice) if options.score == "dice" else -metrics["loss"]
        return CaseResult(case_id, score, metrics, to_cpu_label(prediction))
