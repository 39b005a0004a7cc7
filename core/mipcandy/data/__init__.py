"""Data layer: image I/O with geometry, resampling, datasets, preprocessing cache, inspection, augmentation.

Names are resolved lazily (PEP 562), so importing one piece (say ``Geometry``) does not import torch or
every data module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mipcandy._lazy import lazy_attributes

if TYPE_CHECKING:  # the same names for type checkers and IDEs (tests/test_public_names.py checks they match)
    from mipcandy.data.augment.filters import GaussianBlur as GaussianBlur
    from mipcandy.data.augment.filters import SimulateLowResolution as SimulateLowResolution
    from mipcandy.data.augment.intensity import Contrast as Contrast
    from mipcandy.data.augment.intensity import Gamma as Gamma
    from mipcandy.data.augment.intensity import GaussianNoise as GaussianNoise
    from mipcandy.data.augment.intensity import MultiplicativeBrightness as MultiplicativeBrightness
    from mipcandy.data.augment.monai_transform import MONAITransform as MONAITransform
    from mipcandy.data.augment.pipeline import AugmentingCollate as AugmentingCollate
    from mipcandy.data.augment.pipeline import Compose as Compose
    from mipcandy.data.augment.pipeline import NNUNetAugmentation as NNUNetAugmentation
    from mipcandy.data.augment.pipeline import worker_generator as worker_generator
    from mipcandy.data.augment.spatial import Mirror as Mirror
    from mipcandy.data.augment.spatial import SpatialTransform as SpatialTransform
    from mipcandy.data.cases import CaseInput as CaseInput
    from mipcandy.data.cases import parse_predictant as parse_predictant
    from mipcandy.data.conversion import convert_ids_to_logits as convert_ids_to_logits
    from mipcandy.data.conversion import convert_logits_to_ids as convert_logits_to_ids
    from mipcandy.data.conversion import is_sigmoid_output as is_sigmoid_output
    from mipcandy.data.cropping import nonzero_bbox as nonzero_bbox
    from mipcandy.data.dataset import BinarizedDataset as BinarizedDataset
    from mipcandy.data.dataset import CaseDataset as CaseDataset
    from mipcandy.data.dataset import CaseReader as CaseReader
    from mipcandy.data.dataset import CaseSource as CaseSource
    from mipcandy.data.dataset import DatasetDescription as DatasetDescription
    from mipcandy.data.dataset import DatasetError as DatasetError
    from mipcandy.data.dataset import MemoryReader as MemoryReader
    from mipcandy.data.dataset import MergedDataset as MergedDataset
    from mipcandy.data.dataset import SupervisedDataset as SupervisedDataset
    from mipcandy.data.dataset import UnsupervisedDataset as UnsupervisedDataset
    from mipcandy.data.dataset import dataset_from_tensors as dataset_from_tensors
    from mipcandy.data.export import export_nnunet as export_nnunet
    from mipcandy.data.files import FileReader as FileReader
    from mipcandy.data.folds import kfold_splits as kfold_splits
    from mipcandy.data.folds import load_splits as load_splits
    from mipcandy.data.folds import save_splits as save_splits
    from mipcandy.data.folds import select_fold as select_fold
    from mipcandy.data.geometry import Geometry as Geometry
    from mipcandy.data.inspection import CaseAnnotation as CaseAnnotation
    from mipcandy.data.inspection import InspectionAnnotations as InspectionAnnotations
    from mipcandy.data.inspection import inspect as inspect
    from mipcandy.data.inspection import load_inspection_annotations as load_inspection_annotations
    from mipcandy.data.integrity import CorruptImageError as CorruptImageError
    from mipcandy.data.intensity_stats import IntensityStats as IntensityStats
    from mipcandy.data.io import SUPPORTED_SUFFIXES as SUPPORTED_SUFFIXES
    from mipcandy.data.io import GeometryDroppedWarning as GeometryDroppedWarning
    from mipcandy.data.io import fast_load as fast_load
    from mipcandy.data.io import fast_metadata as fast_metadata
    from mipcandy.data.io import fast_save as fast_save
    from mipcandy.data.io import image_suffix as image_suffix
    from mipcandy.data.io import load_image as load_image
    from mipcandy.data.io import save_image as save_image
    from mipcandy.data.nnunet import NNUNetDataset as NNUNetDataset
    from mipcandy.data.nnunet import NNUNetImageDataset as NNUNetImageDataset
    from mipcandy.data.nnunet import read_dataset_json as read_dataset_json
    from mipcandy.data.normalization import normalization_scheme as normalization_scheme
    from mipcandy.data.normalization import normalize as normalize
    from mipcandy.data.orthographic import OrthographicViews as OrthographicViews
    from mipcandy.data.orthographic import orthographic_views as orthographic_views
    from mipcandy.data.planning import plan_patch_shape as plan_patch_shape
    from mipcandy.data.planning import plan_target_spacing as plan_target_spacing
    from mipcandy.data.postprocess import keep_largest_component as keep_largest_component
    from mipcandy.data.postprocess import logits_to_labels as logits_to_labels
    from mipcandy.data.postprocess import logits_to_probabilities as logits_to_probabilities
    from mipcandy.data.preprocess import CacheBuild as CacheBuild
    from mipcandy.data.preprocess import PreprocessedDataset as PreprocessedDataset
    from mipcandy.data.preprocess import build_cache as build_cache
    from mipcandy.data.preprocess import preprocess_dataset as preprocess_dataset
    from mipcandy.data.preprocessing_plan import CaseProperties as CaseProperties
    from mipcandy.data.preprocessing_plan import PreprocessingPlan as PreprocessingPlan
    from mipcandy.data.preprocessing_plan import preprocess_case as preprocess_case
    from mipcandy.data.preprocessing_plan import restore_case as restore_case
    from mipcandy.data.resample import resample_to_shape as resample_to_shape
    from mipcandy.data.resample import target_shape as target_shape
    from mipcandy.data.roi import EpochSampler as EpochSampler
    from mipcandy.data.roi import RandomROIDataset as RandomROIDataset
    from mipcandy.data.roi_dataset import ROIDataset as ROIDataset
    from mipcandy.data.roi_dataset import ROIPatch as ROIPatch
    from mipcandy.data.sliding_window import gaussian_importance_map as gaussian_importance_map
    from mipcandy.data.sliding_window import predict_labels as predict_labels
    from mipcandy.data.sliding_window import predict_probabilities as predict_probabilities
    from mipcandy.data.sliding_window import sliding_window_inference as sliding_window_inference
    from mipcandy.data.sliding_window import window_slices as window_slices
    from mipcandy.data.sliding_window import window_starts as window_starts
    from mipcandy.data.synthetic import make_synthetic_dataset as make_synthetic_dataset
    from mipcandy.data.synthetic import synthetic_case as synthetic_case

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
    "NNUNetAugmentation": "mipcandy.data.augment.pipeline",
    # --- other helpers: add further names below this line, one block per module ---
    # more datasets, folds, synthetic data (H2)
    "CaseDataset": "mipcandy.data.dataset",
    "CaseSource": "mipcandy.data.dataset",
    "DatasetDescription": "mipcandy.data.dataset",
    "CaseInput": "mipcandy.data.cases",
    "sliding_window_inference": "mipcandy.data.sliding_window",
    "predict_probabilities": "mipcandy.data.sliding_window",
    "predict_labels": "mipcandy.data.sliding_window",
    "gaussian_importance_map": "mipcandy.data.sliding_window",
    "window_slices": "mipcandy.data.sliding_window",
    "window_starts": "mipcandy.data.sliding_window",
    "logits_to_probabilities": "mipcandy.data.postprocess",
    "logits_to_labels": "mipcandy.data.postprocess",
    "keep_largest_component": "mipcandy.data.postprocess",
    "parse_predictant": "mipcandy.data.cases",
    "CaseReader": "mipcandy.data.dataset",
    "UnsupervisedDataset": "mipcandy.data.dataset",
    "DatasetError": "mipcandy.data.dataset",
    "CorruptImageError": "mipcandy.data.integrity",
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
    "Compose": "mipcandy.data.augment.pipeline",
    "SpatialTransform": "mipcandy.data.augment.spatial",
    "Mirror": "mipcandy.data.augment.spatial",
    "GaussianNoise": "mipcandy.data.augment.intensity",
    "GaussianBlur": "mipcandy.data.augment.filters",
    "MultiplicativeBrightness": "mipcandy.data.augment.intensity",
    "Contrast": "mipcandy.data.augment.intensity",
    "SimulateLowResolution": "mipcandy.data.augment.filters",
    "Gamma": "mipcandy.data.augment.intensity",
    "AugmentingCollate": "mipcandy.data.augment.pipeline",
    "worker_generator": "mipcandy.data.augment.pipeline",
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
    # fixed patches, id/one-hot conversion, orthogonal slices, the MONAI adapter (issue 13)
    "ROIDataset": "mipcandy.data.roi_dataset",
    "ROIPatch": "mipcandy.data.roi_dataset",
    "convert_ids_to_logits": "mipcandy.data.conversion",
    "convert_logits_to_ids": "mipcandy.data.conversion",
    "is_sigmoid_output": "mipcandy.data.conversion",
    "orthographic_views": "mipcandy.data.orthographic",
    "OrthographicViews": "mipcandy.data.orthographic",
    "MONAITransform": "mipcandy.data.augment.monai_transform",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
