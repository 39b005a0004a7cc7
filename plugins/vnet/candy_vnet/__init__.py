"""candy-vnet: V-Net (Milletari, Navab and Ahmadi, 3DV 2016) as a MIP Candy bundle.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_vnet.hooks`) never imports torch.
"""
from __future__ import annotations

from mipcandy import lazy_attributes

_LAZY = {
    "VNet": "candy_vnet.vnet",
    "make_vnet3d": "candy_vnet.vnet",
    "dice_loss": "candy_vnet.loss",
    "VNetTrainer": "candy_vnet.bindings",
    "VNetPredictor": "candy_vnet.bindings",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
