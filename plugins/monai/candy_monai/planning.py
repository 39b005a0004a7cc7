"""DynUNet's topology planned from the patch, the way nnU-Net plans its U-Net (no torch, no MONAI here).

nnU-Net (``get_pool_and_conv_props``) halves every axis whose feature map stays at least 4 voxels, among the axes
with the finest current spacing, and stops when no axis can be halved or only one could and it is shorter than 12
voxels; kernels are 3 along axes whose spacing is within 2x of the finest. ``build_network`` only knows the patch in
voxels, not the spacing, so the plan treats the voxels as isotropic (all kernels 3), which is also what the patch
planner aims at after resampling. MONAI's DynUNet takes the result as ``strides`` (the first entry 1),
``kernel_size`` (one per stage) and ``upsample_kernel_size`` (``strides[1:]``), as its tutorials do.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

MIN_FEATURE_MAP = 4  # nnU-Net's smallest feature map edge, in voxels
KERNEL = 3


def plan_dynunet(spatial: Sequence[int]) -> dict[str, list[list[int]]]:
    """``kernel_size``, ``strides`` and ``upsample_kernel_size`` of a DynUNet for a patch of ``spatial`` voxels."""
    ndim = len(spatial)
    if ndim not in (2, 3) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in spatial):
        raise ValueError(f"monai: DynUNet is planned for 2 or 3 positive spatial sizes, got {tuple(spatial)}")
    sizes = [float(s) for s in spatial]
    poolings = [0] * ndim  # an axis's spacing is 2**poolings of the input's
    strides = [[1] * ndim]
    while True:
        poolable = [a for a in range(ndim) if sizes[a] >= 2 * MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(poolings[a] for a in poolable)
        axes = [a for a in poolable if poolings[a] == finest]
        if len(axes) == 1 and sizes[axes[0]] < 3 * MIN_FEATURE_MAP:
            break
        for a in axes:
            sizes[a] = math.ceil(sizes[a] / 2)
            poolings[a] += 1
        strides.append([2 if a in axes else 1 for a in range(ndim)])
    if len(strides) < 3:
        raise ValueError(f"monai: a patch of {tuple(spatial)} voxels leaves room for {len(strides) - 1} "
                         f"downsampling(s), and DynUNet needs at least 2; use patches of at least 16 voxels along "
                         f"an axis, or pass kernel_size, strides and upsample_kernel_size yourself")
    return {"kernel_size": [[KERNEL] * ndim for _ in strides], "strides": strides,
            "upsample_kernel_size": strides[1:]}
