"""The hooks through which MIP Candy discovers and uses the U-Net bundle. torch loads on first build."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mipcandy import hookimpl

VARIANTS = {"2d": 2, "3d": 3}


@hookimpl
def bundle_info() -> dict[str, Any]:
    return {"summary": "nnU-Net-style plain-convolution U-Net (PlainConvUNet), 2D and 3D", "dimensions": [2, 3],
            "variants": sorted(VARIANTS)}


@hookimpl
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> Any:
    """Pick the 2D or 3D builder from the input's rank and plan the topology from the patch as nnU-Net does.

    Without ``hidden_chs``/``strides`` in ``options``, the depth and per-axis strides come from
    :func:`~candy_unet.unet.plan_topology` of the patch (deterministic, so the predictor rebuilds the same
    network); the remaining options go to ``make_unet2d``/``make_unet3d``. Every head is built; deep supervision
    starts off (the trainer switches it with ``set_deep_supervision``).
    """
    from candy_unet.unet import make_unet2d, make_unet3d, plan_topology

    options = dict(options)
    ndim = len(example_shape) - 1
    variant = options.pop("variant", None)
    if variant is not None and VARIANTS.get(str(variant).lower()) != ndim:
        raise ValueError(f"unet: variant {variant!r} does not fit a {ndim}D input of shape {tuple(example_shape)}; "
                         f"variants are {sorted(VARIANTS)}")
    if ndim not in (2, 3):
        raise ValueError(f"unet: expected an input shaped (C, H, W) or (C, D, H, W), got {tuple(example_shape)}")
    if "deep_supervision" in options:
        raise ValueError("unet: deep_supervision is a training option (train(..., deep_supervision=True) or candy "
                         "train --deep-supervision), not a bundle option")
    if not {"hidden_chs", "strides"} & set(options):
        options.update(plan_topology(example_shape[1:]))
    builder = make_unet2d if ndim == 2 else make_unet3d
    return builder(example_shape[0], num_classes, **options)
