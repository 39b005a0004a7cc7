"""Batched torch augmentation (nnU-Net's default set) for (B, C, *spatial) images and (B, 1, *spatial) labels.

The public names are re-exported by :mod:`mipcandy.data.augmentation`; see :mod:`.pipeline` for seeding in workers.
"""
from mipcandy.data.augment.base import Transform
from mipcandy.data.augment.filters import GaussianBlur, SimulateLowResolution, gaussian_blur
from mipcandy.data.augment.intensity import Contrast, Gamma, GaussianNoise, MultiplicativeBrightness
from mipcandy.data.augment.pipeline import AugmentingCollate, Compose, NNUNetAugmentation, worker_generator
from mipcandy.data.augment.spatial import Mirror, SpatialTransform, affine_grid, rotation_matrices

__all__ = [
    "AugmentingCollate",
    "Compose",
    "Contrast",
    "Gamma",
    "GaussianBlur",
    "GaussianNoise",
    "Mirror",
    "MultiplicativeBrightness",
    "NNUNetAugmentation",
    "SimulateLowResolution",
    "SpatialTransform",
    "Transform",
    "affine_grid",
    "gaussian_blur",
    "rotation_matrices",
    "worker_generator",
]
