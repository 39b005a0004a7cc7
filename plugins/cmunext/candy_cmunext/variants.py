"""The three CMUNeXt sizes of the paper, as plain data (no torch), so that ``bundle_info`` can list them cheaply."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """Per stage: output channels, number of CMUNeXt blocks and depthwise kernel size."""

    dims: tuple[int, ...]
    depths: tuple[int, ...]
    kernels: tuple[int, ...]


# Tang et al., "CMUNeXt: An Efficient Medical Image Segmentation Network based on Large Kernel and Skip Fusion",
# ISBI 2024, and the authors' repository FengheTan9/CMUNeXt (network/CMUNeXt.py: cmunext_s, cmunext, cmunext_l).
VARIANTS: dict[str, Variant] = {
    "CMUNeXt-S": Variant(dims=(8, 16, 32, 64, 128), depths=(1, 1, 1, 1, 1), kernels=(3, 3, 7, 7, 9)),
    "CMUNeXt": Variant(dims=(16, 32, 128, 160, 256), depths=(1, 1, 1, 3, 1), kernels=(3, 3, 7, 7, 7)),
    "CMUNeXt-L": Variant(dims=(32, 64, 128, 256, 512), depths=(1, 1, 1, 6, 3), kernels=(3, 3, 7, 7, 7)),
}
DEFAULT_VARIANT = "CMUNeXt"


def find_variant(name: object) -> Variant:
    """The variant called ``name`` (case-insensitive), or a ValueError listing the variants."""
    by_key = {key.lower(): variant for key, variant in VARIANTS.items()}
    if isinstance(name, str) and name.lower() in by_key:
        return by_key[name.lower()]
    raise ValueError(f"cmunext: unknown variant {name!r}; the variants are {list(VARIANTS)}")
