"""Whole-case prediction with an experiment: the Predictor, its outputs and their export.

The tensor primitives it runs (Gaussian sliding windows with mirroring TTA, post-processing of the logits) live
in the data layer (:mod:`mipcandy.data.sliding_window`, :mod:`mipcandy.data.postprocess`), below training, so
that validation uses them too.

Names resolve lazily (PEP 562) so that importing the package does not import torch.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "Predictor": "mipcandy.inference.predictor",
    "Prediction": "mipcandy.inference.predictor",
    "probabilities_to_labels": "mipcandy.inference.predictor",
    "restore_probabilities": "mipcandy.inference.predictor",
    "write_probabilities": "mipcandy.inference.predictor",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
