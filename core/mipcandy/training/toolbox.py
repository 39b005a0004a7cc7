"""The objects one training run updates, bundled so that hooks (``backward``) receive them in one argument."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mipcandy.common.optim.ema import ExponentialMovingAverage


@dataclass
class TrainerToolbox:
    """Model, optimizer, scheduler, criterion and the optional weight EMA and gradient scaler (mixed precision).

    ``criterion(outputs, labels)`` returns ``(loss, {name: float})``. ``validation_model`` is what validation,
    best-checkpoint selection and the saved best weights all use: the EMA's average when there is one.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    ema: ExponentialMovingAverage | None = None
    grad_scaler: torch.amp.GradScaler | None = None

    @property
    def validation_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model
