"""Batched torch augmentation: nnU-Net's default set as composable transforms (implemented in ``augment/``).

Every transform is called as ``transform(image, label, generator)`` on image (B, C, *spatial) float and label
(B, 1, *spatial) integer (or None), 2D or 3D, CPU or GPU, with randomness only from the given CPU generator.
"""
from mipcandy.data.augment import (
    AugmentingCollate,
    Compose,
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    Mirror,
    MultiplicativeBrightness,
    NNUNetAugmentation,
    SimulateLowResolution,
    SpatialTransform,
    Transform,
    affine_grid,
    gaussian_blur,
    rotation_matrices,
    worker_generator,
)

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
