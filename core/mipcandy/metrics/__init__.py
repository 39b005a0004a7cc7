"""Segmentation metrics per (case, class): overlap (Dice, IoU, soft Dice) and surface (HD95, ASSD, NSD).

All take a prediction and a reference as label maps (integer ids) or 0/1 masks, unbatched or batched,
2D or 3D; see :mod:`mipcandy.metrics._layout` for how layouts are told apart and
:mod:`mipcandy.metrics.overlap` / :mod:`mipcandy.metrics.surface` for definitions, empty-class rules and
every difference from MONAI.
"""
from mipcandy.metrics.overlap import binary_dice, dice_similarity_coefficient, iou, soft_dice
from mipcandy.metrics.surface import SharedSurfaceMetrics, assd, hd95, nsd, surface_metrics

__all__ = [
    "SharedSurfaceMetrics",
    "assd",
    "binary_dice",
    "dice_similarity_coefficient",
    "hd95",
    "iou",
    "nsd",
    "soft_dice",
    "surface_metrics",
]
