"""Data layer: image I/O with geometry, resampling, datasets, preprocessing cache, inspection, augmentation.

Names are resolved lazily (PEP 562), so importing one piece (say ``Geometry``) does not import torch or
every data module.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

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
    # more datasets, folds, synthetic data (H2)
    "CaseDataset": "mipcandy.data.dataset",
    "CaseReader": "mipcandy.data.dataset",
    "UnsupervisedDataset": "mipcandy.data.dataset",
    "DatasetError": "mipcandy.data.dataset",
    "MemoryReader": "mipcandy.data.dataset",
    "dataset_from_tensors": "mipcandy.data.dataset",
    "FileReader": "mipcandy.data.files",
    "NNUNetImageDataset": "mipcandy.data.nnunet",
    "read_dataset_json": "mipcandy.data.nnunet",
    "kfold_splits": "mipcandy.data.folds",
    "select_fold": "mipcandy.data.folds",
    "load_splits": "mipcandy.data.folds",
    "save_splits": "mipcandy.data.folds",
    "synthetic_case": "mipcandy.data.synthetic",
    # augmentation, the rest of it (H4)
    "Compose": "mipcandy.data.augmentation",
    "SpatialTransform": "mipcandy.data.augmentation",
    "Mirror": "mipcandy.data.augmentation",
    "GaussianNoise": "mipcandy.data.augmentation",
    "GaussianBlur": "mipcandy.data.augmentation",
    "MultiplicativeBrightness": "mipcandy.data.augmentation",
    "Contrast": "mipcandy.data.augmentation",
    "SimulateLowResolution": "mipcandy.data.augmentation",
    "Gamma": "mipcandy.data.augmentation",
    "AugmentingCollate": "mipcandy.data.augmentation",
    "worker_generator": "mipcandy.data.augmentation",
    # preprocessing, inspection and ROI sampling, the rest of it (H3)
    "build_cache": "mipcandy.data.preprocess",
    "preprocess_dataset": "mipcandy.data.preprocess",
    "CacheBuild": "mipcandy.data.preprocess",
    "PreprocessingPlan": "mipcandy.data.preprocessing_plan",
    "CaseProperties": "mipcandy.data.preprocessing_plan",
    "preprocess_case": "mipcandy.data.preprocessing_plan",
    "restore_case": "mipcandy.data.preprocessing_plan",
    "IntensityStats": "mipcandy.data.intensity_stats",
    "CaseAnnotation": "mipcandy.data.inspection",
    "EpochSampler": "mipcandy.data.roi",
    "normalize": "mipcandy.data.normalization",
    "normalization_scheme": "mipcandy.data.normalization",
    "nonzero_bbox": "mipcandy.data.cropping",
    "plan_target_spacing": "mipcandy.data.planning",
    "plan_patch_shape": "mipcandy.data.planning",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
