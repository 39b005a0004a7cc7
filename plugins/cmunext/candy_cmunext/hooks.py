"""The hooks through which MIP Candy discovers and uses the CMUNeXt bundle. torch loads on first build.

Options of ``build_network``: ``variant`` ("CMUNeXt-S", "CMUNeXt" (default) or "CMUNeXt-L"), and ``dims``,
``depths``, ``kernels`` to change a variant (see :func:`candy_cmunext.cmunext.make_cmunext2d`). The optimizer is the
paper's: SGD with lr 1e-2, momentum 0.9 and weight decay 1e-4 (the core's poly schedule matches its poly 0.9 decay).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from candy_cmunext.variants import VARIANTS
from mipcandy import hookimpl

# FengheTan9/CMUNeXt main.py: optim.SGD(lr=base_lr 0.01, momentum=0.9, weight_decay=0.0001).
PAPER_SGD: dict[str, Any] = {"lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False}


@hookimpl
def bundle_info() -> dict[str, Any]:
    return {"summary": "CMUNeXt (Tang et al., ISBI 2024): lightweight large-kernel 2D U-Net with skip fusion",
            "dimensions": [2], "variants": list(VARIANTS)}


@hookimpl
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> Any:
    """CMUNeXt for a 2D input ``(C, H, W)``; behind a padding when H or W is not a multiple of its divisibility."""
    from candy_cmunext.cmunext import make_cmunext2d
    from mipcandy import Pad2d, PaddedNetwork

    if len(example_shape) != 3:
        raise ValueError(f"cmunext: CMUNeXt is a 2D network, expected an input shaped (C, H, W), got "
                         f"{tuple(example_shape)}")
    network = make_cmunext2d(example_shape[0], num_classes, **options)
    if any(size % network.divisibility for size in example_shape[1:]):
        return PaddedNetwork(network, Pad2d(network.divisibility))
    return network


@hookimpl
def build_optimizer(params: Iterable[Any], options: Mapping[str, Any]) -> Any:
    """The paper's SGD; ``options`` (lr, momentum, weight_decay, nesterov) override its values."""
    import torch

    unknown = sorted(set(options) - set(PAPER_SGD))
    if unknown:
        raise ValueError(f"cmunext: unknown optimizer option(s) {unknown}; the options are {sorted(PAPER_SGD)}")
    return torch.optim.SGD(params, **{**PAPER_SGD, **options})
