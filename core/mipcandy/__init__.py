"""MIP Candy: a modular, PyTorch-native framework for medical image segmentation.

The paper's public names import from here (``from mipcandy import Predictor, NNUNetDataset, inspect``). Importing
``mipcandy`` stays light (no torch): those names are resolved lazily on first use (PEP 562), so that
``candy plugins`` and ``candy --help`` start fast. The ``if TYPE_CHECKING`` block repeats them for type checkers
and IDEs; a test keeps it and the lazy table equal.

A few names of the reference API that were renamed here still resolve, with a ``DeprecationWarning`` (once per
process and name): see ``_RENAMED`` and the README's table of names.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from mipcandy._lazy import lazy_attributes
from mipcandy.hookspecs import DeepSupervisedNetwork, hookimpl, hookspec

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # building blocks
    "LayerT": "mipcandy.layer",
    "Placeholder": "mipcandy.layer",
    "HasDevice": "mipcandy.layer",
    "auto_device": "mipcandy.layer",
    "WithNetwork": "mipcandy.layer",
    "ConvBlock2d": "mipcandy.common.module.conv",
    "ConvBlock3d": "mipcandy.common.module.conv",
    "WSConv2d": "mipcandy.common.module.conv",
    "WSConv3d": "mipcandy.common.module.conv",
    "Pad2d": "mipcandy.common.module.preprocess",
    "Pad3d": "mipcandy.common.module.preprocess",
    "PadTo": "mipcandy.common.module.preprocess",
    "PaddedNetwork": "mipcandy.common.module.preprocess",
    "unpad": "mipcandy.common.module.preprocess",
    # losses, schedules, EMA, regressions
    "DiceCELossWithLogits": "mipcandy.common.optim.loss",
    "DiceBCELossWithLogits": "mipcandy.common.optim.loss",
    "DeepSupervisionWrapper": "mipcandy.common.optim.loss",
    "segmentation_loss": "mipcandy.common.optim.loss",
    "FocalBCEWithLogits": "mipcandy.common.optim.focal",
    "PolyLRScheduler": "mipcandy.common.optim.lr_scheduler",
    "AbsoluteLinearLR": "mipcandy.common.optim.lr_scheduler",
    "ExponentialMovingAverage": "mipcandy.common.optim.ema",
    "quotient_regression": "mipcandy.common.regressions",
    "quotient_derivative": "mipcandy.common.regressions",
    "quotient_bounds": "mipcandy.common.regressions",
    "predict_score": "mipcandy.common.regressions",
    # bundles
    "get_plugin_manager": "mipcandy.plugins",
    "load_bundles": "mipcandy.plugins",
    "get_bundle": "mipcandy.plugins",
    "build_network": "mipcandy.plugins",
    # training
    "Trainer": "mipcandy.training.trainer",
    "TrainerToolbox": "mipcandy.training.toolbox",
    "TrainingOptions": "mipcandy.training.options",
    "visualize2d": "mipcandy.visualization.visualize",
    "overlay": "mipcandy.visualization.visualize",
    "visualize3d": "mipcandy.visualization.render3d",
    "Frontend": "mipcandy.frontend.protocol",
    "create_hybrid_frontend": "mipcandy.frontend.hybrid",
    "open_frontends": "mipcandy.frontend.dispatch",
    "ExperimentSpec": "mipcandy.training.spec",
    "read_experiment_spec": "mipcandy.training.spec",
    "build_experiment_network": "mipcandy.training.network",
    "set_seed": "mipcandy.training.seed",
    "sanity_check": "mipcandy.training.sanity",
    "SanityCheckResult": "mipcandy.training.sanity",
    "run_folds": "mipcandy.training.kfold",
    "SegmentationTrainer": "mipcandy.presets.segmentation",
    # inference, evaluation, metrics
    "Predictor": "mipcandy.inference.predictor",
    "Prediction": "mipcandy.inference.predictor",
    "parse_predictant": "mipcandy.data.cases",
    "sliding_window_inference": "mipcandy.data.sliding_window",
    "keep_largest_component": "mipcandy.data.postprocess",
    "Evaluator": "mipcandy.evaluation.evaluator",
    "EvalResult": "mipcandy.evaluation.result",
    "EvalCase": "mipcandy.evaluation.result",
    "binary_dice": "mipcandy.metrics.overlap",
    "dice_similarity_coefficient": "mipcandy.metrics.overlap",
    "soft_dice": "mipcandy.metrics.overlap",
    "iou": "mipcandy.metrics.overlap",
    "hd95": "mipcandy.metrics.surface",
    "assd": "mipcandy.metrics.surface",
    "nsd": "mipcandy.metrics.surface",
    # data
    "Geometry": "mipcandy.data.geometry",
    "load_image": "mipcandy.data.io",
    "save_image": "mipcandy.data.io",
    "fast_save": "mipcandy.data.io",
    "fast_load": "mipcandy.data.io",
    "SupervisedDataset": "mipcandy.data.dataset",
    "UnsupervisedDataset": "mipcandy.data.dataset",
    "BinarizedDataset": "mipcandy.data.dataset",
    "MergedDataset": "mipcandy.data.dataset",
    "dataset_from_tensors": "mipcandy.data.dataset",
    "NNUNetDataset": "mipcandy.data.nnunet",
    "kfold_splits": "mipcandy.data.folds",
    "make_synthetic_dataset": "mipcandy.data.synthetic",
    "preprocess_dataset": "mipcandy.data.preprocess",
    "PreprocessedDataset": "mipcandy.data.preprocess",
    "inspect": "mipcandy.data.inspection",
    "InspectionAnnotations": "mipcandy.data.inspection",
    "CaseAnnotation": "mipcandy.data.inspection",
    "load_inspection_annotations": "mipcandy.data.inspection",
    "RandomROIDataset": "mipcandy.data.roi",
    "ROIDataset": "mipcandy.data.roi_dataset",
    "NNUNetAugmentation": "mipcandy.data.augment.pipeline",
    "MONAITransform": "mipcandy.data.augment.monai_transform",
    "convert_ids_to_logits": "mipcandy.data.conversion",
    "convert_logits_to_ids": "mipcandy.data.conversion",
    "orthographic_views": "mipcandy.data.orthographic",
}

# Reference-API names renamed here whose new name is a drop-in replacement: old name -> new name (in _LAZY).
_RENAMED: dict[str, str] = {
    "InspectionAnnotation": "CaseAnnotation",
}

if TYPE_CHECKING:  # the same names for type checkers and IDEs (tests/test_public_names.py checks they match)
    from mipcandy.common.module.conv import ConvBlock2d as ConvBlock2d
    from mipcandy.common.module.conv import ConvBlock3d as ConvBlock3d
    from mipcandy.common.module.conv import WSConv2d as WSConv2d
    from mipcandy.common.module.conv import WSConv3d as WSConv3d
    from mipcandy.common.module.preprocess import Pad2d as Pad2d
    from mipcandy.common.module.preprocess import Pad3d as Pad3d
    from mipcandy.common.module.preprocess import PaddedNetwork as PaddedNetwork
    from mipcandy.common.module.preprocess import PadTo as PadTo
    from mipcandy.common.module.preprocess import unpad as unpad
    from mipcandy.common.optim.ema import ExponentialMovingAverage as ExponentialMovingAverage
    from mipcandy.common.optim.focal import FocalBCEWithLogits as FocalBCEWithLogits
    from mipcandy.common.optim.loss import DeepSupervisionWrapper as DeepSupervisionWrapper
    from mipcandy.common.optim.loss import DiceBCELossWithLogits as DiceBCELossWithLogits
    from mipcandy.common.optim.loss import DiceCELossWithLogits as DiceCELossWithLogits
    from mipcandy.common.optim.loss import segmentation_loss as segmentation_loss
    from mipcandy.common.optim.lr_scheduler import AbsoluteLinearLR as AbsoluteLinearLR
    from mipcandy.common.optim.lr_scheduler import PolyLRScheduler as PolyLRScheduler
    from mipcandy.common.regressions import predict_score as predict_score
    from mipcandy.common.regressions import quotient_bounds as quotient_bounds
    from mipcandy.common.regressions import quotient_derivative as quotient_derivative
    from mipcandy.common.regressions import quotient_regression as quotient_regression
    from mipcandy.data.augment.monai_transform import MONAITransform as MONAITransform
    from mipcandy.data.augment.pipeline import NNUNetAugmentation as NNUNetAugmentation
    from mipcandy.data.cases import parse_predictant as parse_predictant
    from mipcandy.data.conversion import convert_ids_to_logits as convert_ids_to_logits
    from mipcandy.data.conversion import convert_logits_to_ids as convert_logits_to_ids
    from mipcandy.data.dataset import BinarizedDataset as BinarizedDataset
    from mipcandy.data.dataset import MergedDataset as MergedDataset
    from mipcandy.data.dataset import SupervisedDataset as SupervisedDataset
    from mipcandy.data.dataset import UnsupervisedDataset as UnsupervisedDataset
    from mipcandy.data.dataset import dataset_from_tensors as dataset_from_tensors
    from mipcandy.data.folds import kfold_splits as kfold_splits
    from mipcandy.data.geometry import Geometry as Geometry
    from mipcandy.data.inspection import CaseAnnotation as CaseAnnotation
    from mipcandy.data.inspection import InspectionAnnotations as InspectionAnnotations
    from mipcandy.data.inspection import inspect as inspect
    from mipcandy.data.inspection import load_inspection_annotations as load_inspection_annotations
    from mipcandy.data.io import fast_load as fast_load
    from mipcandy.data.io import fast_save as fast_save
    from mipcandy.data.io import load_image as load_image
    from mipcandy.data.io import save_image as save_image
    from mipcandy.data.nnunet import NNUNetDataset as NNUNetDataset
    from mipcandy.data.orthographic import orthographic_views as orthographic_views
    from mipcandy.data.postprocess import keep_largest_component as keep_largest_component
    from mipcandy.data.preprocess import PreprocessedDataset as PreprocessedDataset
    from mipcandy.data.preprocess import preprocess_dataset as preprocess_dataset
    from mipcandy.data.roi import RandomROIDataset as RandomROIDataset
    from mipcandy.data.roi_dataset import ROIDataset as ROIDataset
    from mipcandy.data.sliding_window import sliding_window_inference as sliding_window_inference
    from mipcandy.data.synthetic import make_synthetic_dataset as make_synthetic_dataset
    from mipcandy.evaluation.evaluator import Evaluator as Evaluator
    from mipcandy.evaluation.result import EvalCase as EvalCase
    from mipcandy.evaluation.result import EvalResult as EvalResult
    from mipcandy.frontend.dispatch import open_frontends as open_frontends
    from mipcandy.frontend.hybrid import create_hybrid_frontend as create_hybrid_frontend
    from mipcandy.frontend.protocol import Frontend as Frontend
    from mipcandy.inference.predictor import Prediction as Prediction
    from mipcandy.inference.predictor import Predictor as Predictor
    from mipcandy.layer import HasDevice as HasDevice
    from mipcandy.layer import LayerT as LayerT
    from mipcandy.layer import Placeholder as Placeholder
    from mipcandy.layer import WithNetwork as WithNetwork
    from mipcandy.layer import auto_device as auto_device
    from mipcandy.metrics.overlap import binary_dice as binary_dice
    from mipcandy.metrics.overlap import dice_similarity_coefficient as dice_similarity_coefficient
    from mipcandy.metrics.overlap import iou as iou
    from mipcandy.metrics.overlap import soft_dice as soft_dice
    from mipcandy.metrics.surface import assd as assd
    from mipcandy.metrics.surface import hd95 as hd95
    from mipcandy.metrics.surface import nsd as nsd
    from mipcandy.plugins import build_network as build_network
    from mipcandy.plugins import get_bundle as get_bundle
    from mipcandy.plugins import get_plugin_manager as get_plugin_manager
    from mipcandy.plugins import load_bundles as load_bundles
    from mipcandy.presets.segmentation import SegmentationTrainer as SegmentationTrainer
    from mipcandy.training.kfold import run_folds as run_folds
    from mipcandy.training.network import build_experiment_network as build_experiment_network
    from mipcandy.training.options import TrainingOptions as TrainingOptions
    from mipcandy.training.sanity import SanityCheckResult as SanityCheckResult
    from mipcandy.training.sanity import sanity_check as sanity_check
    from mipcandy.training.seed import set_seed as set_seed
    from mipcandy.training.spec import ExperimentSpec as ExperimentSpec
    from mipcandy.training.spec import read_experiment_spec as read_experiment_spec
    from mipcandy.training.toolbox import TrainerToolbox as TrainerToolbox
    from mipcandy.training.trainer import Trainer as Trainer
    from mipcandy.visualization.render3d import visualize3d as visualize3d
    from mipcandy.visualization.visualize import overlay as overlay
    from mipcandy.visualization.visualize import visualize2d as visualize2d

__all__ = ["__version__", "DeepSupervisedNetwork", "hookimpl", "hookspec", "lazy_attributes", *_LAZY]

_lazy_getattr, __dir__ = lazy_attributes(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    """Resolve a lazy name; a renamed reference name warns once, then stays bound to the new name's object."""
    new = _RENAMED.get(name)
    if new is None:
        return _lazy_getattr(name)
    warnings.warn(f"mipcandy.{name} is the reference API's name; it is called mipcandy.{new} here and the old "
                  "name will be removed", DeprecationWarning, stacklevel=2)
    value = _lazy_getattr(new)
    globals()[name] = value  # later lookups find it directly: one warning per process
    return value
