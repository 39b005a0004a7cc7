"""MIP Candy: a modular, PyTorch-native framework for medical image segmentation.

Importing ``mipcandy`` stays light (no torch): heavy names are resolved lazily on first use,
so that ``candy plugins`` and ``candy --help`` start fast.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes
from mipcandy.hookspecs import DeepSupervisedNetwork, hookimpl, hookspec

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "LayerT": "mipcandy.layer",
    "Placeholder": "mipcandy.layer",
    "HasDevice": "mipcandy.layer",
    "auto_device": "mipcandy.layer",
    "WithNetwork": "mipcandy.layer",
    "ConvBlock2d": "mipcandy.common.module.conv",
    "ConvBlock3d": "mipcandy.common.module.conv",
    "Pad2d": "mipcandy.common.module.preprocess",
    "Pad3d": "mipcandy.common.module.preprocess",
    "PadTo": "mipcandy.common.module.preprocess",
    "PaddedNetwork": "mipcandy.common.module.preprocess",
    "unpad": "mipcandy.common.module.preprocess",
    "get_plugin_manager": "mipcandy.plugins",
    "load_bundles": "mipcandy.plugins",
    "list_bundles": "mipcandy.plugins",
    "get_bundle": "mipcandy.plugins",
    "build_network": "mipcandy.plugins",
    "Trainer": "mipcandy.training.trainer",
    "TrainerToolbox": "mipcandy.training.toolbox",
    "SegmentationTrainer": "mipcandy.presets.segmentation",
    "Evaluator": "mipcandy.evaluation.evaluator",
    "EvalResult": "mipcandy.evaluation.result",
}

__all__ = ["__version__", "DeepSupervisedNetwork", "hookimpl", "hookspec", "lazy_attributes", *_LAZY]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
