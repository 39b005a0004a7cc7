"""The hooks through which MIP Candy discovers and uses the UNet++ bundle. torch loads on first build."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mipcandy import hookimpl

BUILDERS = {2: "make_unetpp2d", 3: "make_unetpp3d"}


@hookimpl
def bundle_info() -> dict[str, Any]:
    return {"summary": "UNet++: nested dense skip pathways with deep supervision (DLMIA 2018), 2D and 3D",
            "dimensions": sorted(BUILDERS), "variants": [f"{ndim}d" for ndim in sorted(BUILDERS)]}


@hookimpl
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> Any:
    """The 2D or 3D UNet++ picked by the input's rank (``variant`` "2d"/"3d" must agree); other options go on."""
    from candy_unetpp import unetpp

    options = dict(options)
    shape = tuple(example_shape)
    ndim = len(shape) - 1
    if ndim not in BUILDERS:
        raise ValueError(f"unetpp: expected an input shaped (C, H, W) or (C, D, H, W), got {shape}")
    variant = options.pop("variant", f"{ndim}d")
    if str(variant).lower() != f"{ndim}d":
        raise ValueError(f"unetpp: variant {variant!r} does not fit a {ndim}D input of shape {shape}; the variants "
                         f"are {bundle_info()['variants']}")
    return getattr(unetpp, BUILDERS[ndim])(shape[0], num_classes, **options)
