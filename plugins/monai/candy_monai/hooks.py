"""The MONAI bridge: MONAI's segmentation networks by name, trained with MIP Candy's (nnU-Net's) recipe.

``candy train --bundle monai --bundle-option network=SegResNet`` (or ``SwinUNETR``, ``DynUNet``, ``AttentionUnet``,
``BasicUNetPlusPlus``), 2D or 3D, with any further option passed to the class's constructor (JSON values, e.g.
``--bundle-option init_filters=16``).

What the bridge decides:

* ``spatial_dims``, ``in_channels`` and ``out_channels`` come from the input shape and the number of classes, and
  ``img_size`` too where the installed MONAI still takes it (SwinUNETR before 1.5); passing them is an error.
* DynUNet's ``strides``, ``kernel_size`` and ``upsample_kernel_size`` are planned from the patch as nnU-Net plans its
  U-Net (:func:`candy_monai.planning.plan_dynunet`), and ``deep_supr_num`` covers every decoder level but the
  lowest; AttentionUnet's required ``channels``/``strides`` default to 16-32-64-128-256 with stride 2. Options given
  win over these.
* Options the class's constructor does not take raise ValueError listing the ones it does (from its signature),
  before anything is built.
* Deep supervision: DynUNet (always built with its heads) and BasicUNetPlusPlus implement
  ``mipcandy.DeepSupervisedNetwork`` through an adapter (off at first; on, a list with the final output first;
  MONAI's heads are all at full resolution). SegResNet, SwinUNETR and AttentionUnet have no heads.
* When the patch is not a multiple of what the network needs (e.g. SwinUNETR needs multiples of 32), the network
  comes behind ``mipcandy.PaddedNetwork``.

MONAI is imported by ``build_network`` only: discovery (``candy plugins``) stays fast.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mipcandy import hookimpl

NETWORKS = ("SegResNet", "SwinUNETR", "DynUNet", "AttentionUnet", "BasicUNetPlusPlus")


@hookimpl
def bundle_info() -> dict[str, Any]:
    return {"summary": "MONAI's networks by name (option network=...), trained with MIP Candy's recipe",
            "dimensions": [2, 3], "variants": list(NETWORKS)}


@hookimpl
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> Any:
    """The MONAI class named by ``options["network"]``, built for ``example_shape`` (see the module doc)."""
    from candy_monai.bridge import build_monai_network

    return build_monai_network(example_shape, num_classes, options)
