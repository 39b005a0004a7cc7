"""Ready-made trainers; names resolve lazily so that importing the package does not import torch."""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

_LAZY: dict[str, str] = {"SegmentationTrainer": "mipcandy.presets.segmentation"}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
