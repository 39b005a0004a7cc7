"""The hooks through which MIP Candy discovers and uses the UNETR bundle. torch loads on first build."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mipcandy import hookimpl

VARIANTS = {"2d": 2, "3d": 3}
# The paper trains with AdamW at an initial learning rate of 1e-4 (Hatamizadeh et al., WACV 2022, implementation
# details) and describes no schedule; weight decay 1e-5 is the default of the authors' BTCV script
# (Project-MONAI/research-contributions UNETR/BTCV/main.py, --reg_weight). That script also defaults to a linear
# warm-up + cosine schedule the paper does not state, so the core's poly decay stays.
ADAMW_DEFAULTS: dict[str, Any] = {"lr": 1e-4, "weight_decay": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8}


@hookimpl
def bundle_info() -> dict[str, Any]:
    return {"summary": "UNETR: ViT encoder on 16-voxel patches with a convolutional decoder (WACV 2022), 2D and 3D",
            "dimensions": [2, 3], "variants": sorted(VARIANTS)}


@hookimpl
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> Any:
    """The 2D or 3D UNETR for exactly the example's spatial size (its position embedding depends on it)."""
    from candy_unetr.unetr import make_unetr2d, make_unetr3d

    options = dict(options)
    shape = tuple(example_shape)
    ndim = len(shape) - 1
    if ndim not in VARIANTS.values():
        raise ValueError(f"unetr: expected an input shaped (C, H, W) or (C, D, H, W), got {shape}")
    variant = options.pop("variant", None)
    if variant is not None and VARIANTS.get(str(variant).lower()) != ndim:
        raise ValueError(f"unetr: variant {variant!r} does not fit a {ndim}D input of shape {shape}; "
                         f"variants are {sorted(VARIANTS)}")
    if "img_size" in options:
        raise ValueError(f"unetr: img_size is not an option: the network is built for the patch size "
                         f"{shape[1:]}; change the patch instead")
    builder = make_unetr2d if ndim == 2 else make_unetr3d
    return builder(shape[0], num_classes, img_size=shape[1:], **options)


@hookimpl
def build_optimizer(params: Iterable[Any], options: Mapping[str, Any]) -> Any:
    """AdamW with the paper's lr 1e-4 and weight decay 1e-5; ``options`` override lr, weight_decay, betas, eps."""
    import torch

    unknown = sorted(set(options) - set(ADAMW_DEFAULTS))
    if unknown:
        raise ValueError(f"unetr: unknown optimizer option(s) {unknown}; UNETR trains with AdamW, whose options "
                         f"are {sorted(ADAMW_DEFAULTS)}")
    settings = {**ADAMW_DEFAULTS, **options}
    settings["betas"] = tuple(settings["betas"])  # JSON stores the pair as a list
    return torch.optim.AdamW(params, **settings)
