"""Build a MONAI network by class name for one input shape: what the data decides is filled in, the rest is options.

``spatial_dims``, ``in_channels`` and ``out_channels`` come from ``example_shape`` and ``num_classes`` (and
``img_size`` for MONAI versions whose class still takes it); shape-dependent arguments the user leaves out are
planned from the example shape; every other option goes to the constructor unchanged, after checking it against
the constructor's signature. Networks with deep-supervision heads come behind a :mod:`candy_monai.deep_supervision`
adapter, and a network whose size constraints the example shape does not meet comes behind a
``mipcandy.PaddedNetwork``.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import monai.networks.nets as monai_nets
from torch import nn

from candy_monai.deep_supervision import DynUNetHeads, UNetPlusPlusHeads
from candy_monai.planning import plan_dynunet
from mipcandy import Pad2d, Pad3d, PaddedNetwork

Arguments = dict[str, Any]
Axes = tuple[int, ...]

ATTENTION_UNET_WIDTH, ATTENTION_UNET_STAGES = 16, 5  # our default 16-32-64-128-256; MONAI's AttentionUnet has none
UNET_PLUS_PLUS_POOLINGS = 4  # BasicUNetPlusPlus always pools 4 times


def _stride_product(strides: Sequence[Any], ndim: int) -> Axes:
    """Per axis, the product of strides given as ints or as one int per axis."""
    per_axis = [(s,) * ndim if isinstance(s, int) else tuple(s) for s in strides]
    return tuple(math.prod(axis) for axis in zip(*per_axis, strict=True))


def _dynunet_defaults(spatial: Axes, options: Arguments) -> Arguments:
    strides = options.get("strides") or plan_dynunet(spatial)["strides"]
    ndim = len(spatial)
    return {"strides": strides, "kernel_size": [[3] * ndim for _ in strides], "upsample_kernel_size": strides[1:],
            "deep_supr_num": max(1, len(strides) - 2)}  # every decoder level but the lowest, as nnU-Net


def _attention_unet_defaults(spatial: Axes, options: Arguments) -> Arguments:
    channels = options.get("channels")
    if channels is None:
        stages = len(options["strides"]) + 1 if options.get("strides") else ATTENTION_UNET_STAGES
        channels = [ATTENTION_UNET_WIDTH * 2**i for i in range(stages)]
    return {"channels": channels, "strides": [2] * (len(channels) - 1)}


def _nothing_planned(spatial: Axes, options: Arguments) -> Arguments:
    return {}


@dataclass(frozen=True)
class Recipe:
    """What the bridge adds to one MONAI class.

    ``defaults(spatial, options)`` gives the arguments left to plan (options given win over them); ``divisor(
    arguments, ndim)`` is, per axis, the factor input sizes must be multiples of (``arguments`` include the
    signature's defaults); ``fixed`` are arguments the bridge always sets and ``heads`` the deep-supervision
    adapter.
    """

    divisor: Callable[[Arguments, int], Axes]
    defaults: Callable[[Axes, Arguments], Arguments] = _nothing_planned
    fixed: Arguments = field(default_factory=dict)
    heads: Callable[[nn.Module], nn.Module] | None = None


RECIPES: dict[str, Recipe] = {
    "SegResNet": Recipe(divisor=lambda a, ndim: (2 ** (len(a["blocks_down"]) - 1),) * ndim),
    "SwinUNETR": Recipe(divisor=lambda a, ndim: (a.get("patch_size", 2) ** 5,) * ndim),  # patch_size, 4 mergings
    "DynUNet": Recipe(divisor=lambda a, ndim: _stride_product(a["strides"], ndim), defaults=_dynunet_defaults,
                      fixed={"deep_supervision": True}, heads=DynUNetHeads),
    "AttentionUnet": Recipe(divisor=lambda a, ndim: _stride_product(a["strides"], ndim),
                            defaults=_attention_unet_defaults),
    "BasicUNetPlusPlus": Recipe(divisor=lambda a, ndim: (2**UNET_PLUS_PLUS_POOLINGS,) * ndim,
                                fixed={"deep_supervision": False}, heads=UNetPlusPlusHeads),
}


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``cls`` accepts, by name."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in inspect.signature(cls).parameters.items() if p.kind in kinds}


def _check_input(example_shape: Sequence[int], num_classes: int) -> Axes:
    shape = tuple(example_shape)
    if len(shape) not in (3, 4) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"monai: expected an input shaped (C, H, W) or (C, D, H, W), got {shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"monai: num_classes must be a positive integer, got {num_classes!r}")
    return shape


def build_monai_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> nn.Module:
    """MONAI's ``options["network"]`` for inputs of ``example_shape``; the other options go to its constructor.

    Raises ValueError naming the supported networks when ``network`` is missing or unknown, the accepted options
    when one is not an argument of the class, and the arguments when MONAI rejects their values.
    """
    options = dict(options)
    name = options.pop("network", None)
    if name not in RECIPES:
        given = "no network option" if name is None else f"unknown network {name!r}"
        raise ValueError(f"monai: {given}; choose one with network=NAME, the supported networks are {list(RECIPES)}")
    shape = _check_input(example_shape, num_classes)
    spatial, ndim = shape[1:], len(shape) - 1
    recipe, cls = RECIPES[name], getattr(monai_nets, name)
    parameters = constructor_parameters(cls)
    from_data: Arguments = {"spatial_dims": ndim, "in_channels": shape[0], "out_channels": num_classes}
    if "img_size" in parameters:  # MONAI < 1.5 still sizes SwinUNETR for the input
        from_data["img_size"] = spatial
    reserved = set(from_data) | set(recipe.fixed)
    taken = sorted(reserved & set(options))
    if taken:
        raise ValueError(f"monai: {name}'s {taken} are set by the bridge (from the input shape and the number of "
                         f"classes; deep supervision is switched by the trainer); remove them from the options")
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"monai: {name} does not accept {unknown}; its options are "
                         f"{sorted(set(parameters) - reserved)}")
    arguments = {**recipe.defaults(spatial, options), **options, **recipe.fixed, **from_data}
    missing = sorted(n for n, p in parameters.items() if p.default is inspect.Parameter.empty and n not in arguments)
    if missing:
        raise ValueError(f"monai: {name} needs {missing}; pass them as options")
    try:
        network = cls(**arguments)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as error:
        raise ValueError(f"monai: {name} rejected the arguments {arguments}: {error}") from error
    if recipe.heads is not None:
        network = recipe.heads(network)
    signature_defaults = {n: p.default for n, p in parameters.items() if p.default is not inspect.Parameter.empty}
    divisor = recipe.divisor({**signature_defaults, **arguments}, ndim)
    if any(size % factor for size, factor in zip(spatial, divisor, strict=True)):
        return PaddedNetwork(network, (Pad2d if ndim == 2 else Pad3d)(divisor))
    return network
