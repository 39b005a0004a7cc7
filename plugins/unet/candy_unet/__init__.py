"""candy-unet: an nnU-Net-style plain-convolution U-Net bundle for MIP Candy.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_unet.hooks`) never
imports torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "UNet": "candy_unet.unet",
    "make_unet2d": "candy_unet.unet",
    "make_unet3d": "candy_unet.unet",
    "UNetTrainer": "candy_unet.unet_trainer",
    "UNetPredictor": "candy_unet.unet_predictor",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'candy_unet' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
