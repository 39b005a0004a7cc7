"""Batched torch augmentation: nnU-Net's default set as composable transforms (implemented in ``augment/``).

Every transform is called as ``transform(image, label, generator)`` on image (B, C, *spatial) float and label
(B, 1, *spatial) integer (or None), 2D or 3D, CPU or GPU, with randomness only from the given CPU generator.
"""
from mipcandy.data.augment import *  # noqa: F403 - this module is the stable import path of the package
from mipcandy.data.augment import __all__  # noqa: F401
