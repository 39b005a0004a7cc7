"""The hooks through which MIP Candy discovers and uses the MedNeXt bundle. torch loads on first build."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mipcandy import hookimpl

BUILDERS = {2: "make_mednext2d", 3: "make_mednext3d"}
# The official recipe (MIC-DKFZ/MedNeXt, nnUNetTrainerV2_Optim_and_LR): AdamW, lr 1e-3, nnU-Net v1's weight decay
# 3e-5 and eps 1e-4 ("1e-8 might cause nans in fp16"); its poly 0.9 schedule is the core's default.
ADAMW: dict[str, Any] = {"lr": 1e-3, "weight_decay": 3e-5, "eps": 1e-4, "betas": (0.9, 0.999)}


@hookimpl
def bundle_info() -> dict[str, Any]:
    return {"summary": "MedNeXt: ConvNeXt blocks, residual resampling, UpKern (MICCAI 2023), 2D and 3D",
            "dimensions": sorted(BUILDERS), "variants": ["S", "B", "M", "L"]}


@hookimpl
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> Any:
    """The 2D or 3D MedNeXt picked by the input's rank; the options go to the builder."""
    from candy_mednext import mednext

    shape = tuple(example_shape)
    if len(shape) - 1 not in BUILDERS:
        raise ValueError(f"mednext: expected an input shaped (C, H, W) or (C, D, H, W), got {shape}")
    return getattr(mednext, BUILDERS[len(shape) - 1])(shape[0], num_classes, **options)


@hookimpl
def build_optimizer(params: Iterable[Any], options: Mapping[str, Any]) -> Any:
    """MedNeXt's AdamW; ``options`` (lr, weight_decay, eps, betas) override the recipe's values."""
    import torch

    unknown = sorted(set(options) - set(ADAMW))
    if unknown:
        raise ValueError(f"mednext: unknown optimizer option(s) {unknown}; MedNeXt's AdamW takes {list(ADAMW)}")
    settings = {**ADAMW, **options}
    return torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"], eps=settings["eps"],
                             betas=tuple(settings["betas"]))
