"""candy-unetpp: UNet++ (Zhou et al., DLMIA 2018) as a MIP Candy bundle.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_unetpp.hooks`) never imports torch.
"""
from __future__ import annotations

from mipcandy import lazy_attributes

_LAZY = {
    "UNetPlusPlus": "candy_unetpp.unetpp",
    "make_unetpp2d": "candy_unetpp.unetpp",
    "make_unetpp3d": "candy_unetpp.unetpp",
    "UNetPPTrainer": "candy_unetpp.bindings",
    "UNetPPPredictor": "candy_unetpp.bindings",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
