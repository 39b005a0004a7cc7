"""Ready-made trainers; names resolve lazily so that importing the package does not import torch."""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY: dict[str, str] = {"SegmentationTrainer": "mipcandy.presets.segmentation"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mipcandy.presets' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
