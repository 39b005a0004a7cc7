"""candy-unet: an nnU-Net-style plain-convolution U-Net bundle for MIP Candy.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_unet.hooks`) never
imports torch.
"""
from __future__ import annotations

from mipcandy import lazy_attributes

_LAZY = {
    "UNet": "candy_unet.unet",
    "make_unet2d": "candy_unet.unet",
    "make_unet3d": "candy_unet.unet",
    "plan_topology": "candy_unet.unet",
    "UNetTrainer": "candy_unet.bindings",
    "UNetPredictor": "candy_unet.bindings",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
