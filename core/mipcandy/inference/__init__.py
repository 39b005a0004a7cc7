"""Whole-case inference: Gaussian sliding windows with mirroring TTA, and post-processing of the logits.

Names resolve lazily (PEP 562) so that importing the package does not import torch.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "sliding_window_inference": "mipcandy.inference.sliding_window",
    "predict_probabilities": "mipcandy.inference.sliding_window",
    "predict_labels": "mipcandy.inference.sliding_window",
    "gaussian_importance_map": "mipcandy.inference.sliding_window",
    "window_slices": "mipcandy.inference.sliding_window",
    "window_starts": "mipcandy.inference.sliding_window",
    "logits_to_probabilities": "mipcandy.inference.postprocess",
    "logits_to_labels": "mipcandy.inference.postprocess",
    "keep_largest_component": "mipcandy.inference.postprocess",
    "Predictor": "mipcandy.inference.predictor",
    "Prediction": "mipcandy.inference.predictor",
    "probabilities_to_labels": "mipcandy.inference.predictor",
    "restore_probabilities": "mipcandy.inference.predictor",
    "write_probabilities": "mipcandy.inference.predictor",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
