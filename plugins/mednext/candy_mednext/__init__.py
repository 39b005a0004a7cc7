"""candy-mednext: MedNeXt (Roy et al., MICCAI 2023) as a MIP Candy bundle.

Names are resolved lazily so that plugin discovery (which imports :mod:`candy_mednext.hooks`) never imports torch.
"""
from __future__ import annotations

from mipcandy import lazy_attributes

_LAZY = {
    "MedNeXt": "candy_mednext.mednext",
    "MedNeXtBlock": "candy_mednext.mednext",
    "make_mednext2d": "candy_mednext.mednext",
    "make_mednext3d": "candy_mednext.mednext",
    "upkern": "candy_mednext.upkern",
    "MedNeXtTrainer": "candy_mednext.bindings",
    "MedNeXtPredictor": "candy_mednext.bindings",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
