"""Data layer: image I/O with geometry, resampling, datasets, preprocessing cache, inspection, augmentation.

Names are resolved lazily (PEP 562), so importing one piece (say ``Geometry``) does not import torch or
every data module.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY: dict[str, str] = {
    # geometry, I/O, resampling (H1). The function ``resample`` is deliberately absent: importing the submodule
    # ``mipcandy.data.resample`` binds that name on the package, so it could not stably mean the function.
    # Use ``from mipcandy.data.resample import resample``.
    "Geometry": "mipcandy.data.geometry",
    "load_image": "mipcandy.data.io",
    "save_image": "mipcandy.data.io",
    "fast_save": "mipcandy.data.io",
    "fast_load": "mipcandy.data.io",
    "fast_metadata": "mipcandy.data.io",
    "image_suffix": "mipcandy.data.io",
    "GeometryDroppedWarning": "mipcandy.data.io",
    "SUPPORTED_SUFFIXES": "mipcandy.data.io",
    "resample_to_shape": "mipcandy.data.resample",
    "target_shape": "mipcandy.data.resample",
    # datasets, export, synthetic data (H2)
    "SupervisedDataset": "mipcandy.data.dataset",
    "NNUNetDataset": "mipcandy.data.nnunet",
    "BinarizedDataset": "mipcandy.data.dataset",
    "MergedDataset": "mipcandy.data.dataset",
    "export_nnunet": "mipcandy.data.export",
    "make_synthetic_dataset": "mipcandy.data.synthetic",
    # preprocessing cache, inspection, ROI sampling (H3)
    "PreprocessedDataset": "mipcandy.data.preprocess",
    "inspect": "mipcandy.data.inspection",
    "InspectionAnnotations": "mipcandy.data.inspection",
    "load_inspection_annotations": "mipcandy.data.inspection",
    "RandomROIDataset": "mipcandy.data.roi",
    # augmentation (H4)
    "NNUNetAugmentation": "mipcandy.data.augmentation",
    # --- other helpers: add further names below this line, one block per module ---
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mipcandy.data' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
