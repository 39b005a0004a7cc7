"""candy-unetr: UNETR (Hatamizadeh et al., WACV 2022) as a MIP Candy bundle.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_unetr.hooks`) never imports torch.
"""
from __future__ import annotations

from mipcandy import lazy_attributes

_LAZY = {
    "UNETR": "candy_unetr.unetr",
    "make_unetr2d": "candy_unetr.unetr",
    "make_unetr3d": "candy_unetr.unetr",
    "ViTEncoder": "candy_unetr.vit",
    "UNETRTrainer": "candy_unetr.bindings",
    "UNETRPredictor": "candy_unetr.bindings",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
