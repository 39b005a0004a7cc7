"""candy-monai: MONAI's segmentation networks by name, trained with MIP Candy's recipe.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_monai.hooks`) imports neither torch
nor MONAI.
"""
from __future__ import annotations

from mipcandy import lazy_attributes

_LAZY = {
    "build_monai_network": "candy_monai.bridge",
    "plan_dynunet": "candy_monai.planning",
    "DynUNetHeads": "candy_monai.deep_supervision",
    "UNetPlusPlusHeads": "candy_monai.deep_supervision",
    "MONAITrainer": "candy_monai.bindings",
    "MONAIPredictor": "candy_monai.bindings",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
