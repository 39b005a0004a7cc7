"""The training framework: trainer lifecycle, experiment folder, exact recovery, k-fold runs.

Names resolve lazily (PEP 562), so importing the package does not import torch.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "Trainer": "mipcandy.training.trainer",
    "TrainingSummary": "mipcandy.training.trainer",
    "Tracker": "mipcandy.training.trainer",
    "TrainerToolbox": "mipcandy.training.toolbox",
    "TrainingOptions": "mipcandy.training.options",
    "ExperimentWriter": "mipcandy.training.experiment",
    "ArtefactWarning": "mipcandy.training.experiment",
    "create_experiment_folder": "mipcandy.training.experiment",
    "ExperimentSpec": "mipcandy.training.spec",
    "DataRecord": "mipcandy.training.spec",
    "BundleRecord": "mipcandy.training.spec",
    "read_experiment_spec": "mipcandy.training.spec",
    "ExperimentSpecError": "mipcandy.training.spec",
    "build_experiment_network": "mipcandy.training.network",
    "set_deep_supervision": "mipcandy.training.network",
    "ResumeError": "mipcandy.training.trainer",
    "save_state": "mipcandy.training.checkpoint",
    "load_state": "mipcandy.training.checkpoint",
    "sanity_check": "mipcandy.training.sanity",
    "SanityCheckError": "mipcandy.training.sanity",
    "SanityCheckResult": "mipcandy.training.sanity",
    "set_seed": "mipcandy.training.seed",
    "capture_rng_state": "mipcandy.training.seed",
    "restore_rng_state": "mipcandy.training.seed",
    "BatchStream": "mipcandy.training.stream",
    "CaseResult": "mipcandy.training.validation",
    "ValidationResult": "mipcandy.training.validation",
    "run_folds": "mipcandy.training.kfold",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
