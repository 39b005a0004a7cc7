"""Validation results: per-case scores and metrics, their aggregation, the worst case and the smoothed score.

The score that picks the best checkpoint is a real metric (mean foreground Dice by default) on whole cases,
smoothed like nnU-Net's pseudo-Dice EMA (``0.9 · old + 0.1 · new``) so that one lucky epoch does not win.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mipcandy.metrics import dice_similarity_coefficient


@dataclass
class CaseResult:
    """One validated case: its score (higher is better), its metrics and its predicted label map (1, *spatial).

    ``index`` is the case's position in the validation dataset (set by the trainer).
    """

    case_id: str
    score: float
    metrics: dict[str, float]
    prediction: Tensor | None = None
    index: int = -1


@dataclass
class ValidationResult:
    """All cases of one validation pass; only the worst case keeps its prediction (for the preview)."""

    cases: list[CaseResult] = field(default_factory=list)

    def add(self, case: CaseResult) -> None:
        """Record a case, dropping the prediction of whichever case is no longer the worst."""
        worst = self.worst
        if worst is not None and case.score >= worst.score:
            case.prediction = None
        elif worst is not None:
            worst.prediction = None
        self.cases.append(case)

    @property
    def worst(self) -> CaseResult | None:
        """The lowest-scoring case (the first one on ties); NaN scores count as worst."""
        if not self.cases:
            return None
        return min(self.cases, key=lambda c: -math.inf if math.isnan(c.score) else c.score)

    @property
    def score(self) -> float:
        """Mean case score."""
        return sum(c.score for c in self.cases) / len(self.cases) if self.cases else math.nan

    def mean_metrics(self) -> dict[str, float]:
        """Each metric averaged over the cases that report it, NaN values left out."""
        keys = dict.fromkeys(k for c in self.cases for k in c.metrics)
        means = {}
        for key in keys:
            values = [c.metrics[key] for c in self.cases if key in c.metrics and not math.isnan(c.metrics[key])]
            means[key] = sum(values) / len(values) if values else math.nan
        return means


def foreground_dice(prediction: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """Dice of each foreground class of one case, ``(max(num_classes, 2) - 1,)``; a class absent on both sides is 1.

    ``prediction`` and ``label`` are (1, *spatial) label maps (a binary sigmoid network predicts 0/1 maps).
    """
    spatial_dims = label.ndim - 1
    return dice_similarity_coefficient(prediction.long(), label.long(), num_classes=max(num_classes, 2),
                                       include_background=False, reduction="none", spatial_dims=spatial_dims)


def smooth_score(previous: float | None, score: float, smoothing: float) -> float:
    """``smoothing · previous + (1 − smoothing) · score``; the first score (or after NaN) starts the average."""
    if previous is None or math.isnan(previous):
        return score
    return smoothing * previous + (1 - smoothing) * score


def to_cpu_label(prediction: Tensor) -> Tensor:
    """The smallest integer type holding a label map, on the CPU (previews keep it between epochs)."""
    return prediction.to(torch.int16 if prediction.max() > 127 else torch.int8).cpu()
