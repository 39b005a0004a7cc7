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
    """Pick the 2D or 3D builder from the input's rank; remaining options go to the builder."""
    from candy_unet.unet import make_unet2d, make_unet3d

    options = dict(options)
    ndim = len(example_shape) - 1
    variant = options.pop("variant", None)
    if variant is not None and VARIANTS.get(str(variant).lower()) != ndim:
        raise ValueError(f"unet: variant {variant!r} does not fit a {ndim}D input of shape {tuple(example_shape)}; "
                         f"variants are {sorted(VARIANTS)}")
    if ndim not in (2, 3):
        raise ValueError(f"unet: expected an input shaped (C, H, W) or (C, D, H, W), got {tuple(example_shape)}")
    builder = make_unet2d if ndim == 2 else make_unet3d
    return builder(example_shape[0], num_classes, **options)


@hookimpl
def trainer_class() -> type:
    """UNetTrainer: deep-supervision weights sized to the network's outputs, depth planned from the patch."""
    from candy_unet.unet_trainer import UNetTrainer

    return UNetTrainer
