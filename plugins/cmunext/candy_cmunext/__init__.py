"""candy-cmunext: CMUNeXt (Tang et al., ISBI 2024) for MIP Candy, 2D, in the paper's three sizes.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_cmunext.hooks`) never imports torch.
"""
from __future__ import annotations

from mipcandy import lazy_attributes

_LAZY = {
    "CMUNeXt": "candy_cmunext.cmunext",
    "make_cmunext2d": "candy_cmunext.cmunext",
    "VARIANTS": "candy_cmunext.variants",
    "Variant": "candy_cmunext.variants",
    "CMUNeXtTrainer": "candy_cmunext.bindings",
    "CMUNeXtPredictor": "candy_cmunext.bindings",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
