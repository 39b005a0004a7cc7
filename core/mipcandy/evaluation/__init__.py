"""Evaluation of segmentations: per-case, per-class and aggregate metric reports from folders, tensors or datasets.

Names resolve lazily (PEP 562) so that importing the package does not import torch.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "Evaluator": "mipcandy.evaluation.evaluator",
    "EvalResult": "mipcandy.evaluation.result",
    "EvalCase": "mipcandy.evaluation.result",
    "Aggregate": "mipcandy.evaluation.result",
    "Metric": "mipcandy.evaluation.evaluator",
    "EvaluationError": "mipcandy.evaluation.evaluator",
    "standard_metrics": "mipcandy.evaluation.evaluator",
    "STANDARD_METRICS": "mipcandy.evaluation.evaluator",
    "pair_folders": "mipcandy.evaluation.pairing",
    "list_cases": "mipcandy.evaluation.pairing",
    "PairingError": "mipcandy.evaluation.pairing",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
