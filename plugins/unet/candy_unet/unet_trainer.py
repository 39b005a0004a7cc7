"""The U-Net bundle's trainer: the segmentation preset with the network built by this bundle.

Without explicit ``hidden_chs``/``strides`` in ``bundle_options``, the depth and the per-axis strides are planned
from the patch as nnU-Net does: an axis is halved while its feature map stays at least 4 voxels, up to the
default number of stages (7 in 2D, 6 in 3D), so every planned patch fits the network's divisibility.

Deep supervision is wired to the network: one loss head per decoder output (``UNet.output_strides``), with
nnU-Net's weights (``1/2^i``, the lowest resolution 0), and switched off during validation (the network's
``deep_supervision`` attribute), so that validation runs only the full-resolution head.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from mipcandy.common.optim import DeepSupervisionWrapper, deep_supervision_weights, segmentation_loss
from mipcandy.presets.segmentation import SegmentationTrainer

DEFAULT_CHANNELS = {2: (32, 64, 128, 256, 512, 512, 512), 3: (32, 64, 128, 256, 320, 320)}
MIN_FEATURE_SIZE = 4


def plan_topology(patch: Sequence[int]) -> dict[str, Any]:
    """``hidden_chs`` and per-stage ``strides`` for a patch: halve each axis while it stays >= 4 voxels."""
    channels = DEFAULT_CHANNELS[len(patch)]
    pools = [max(0, int(math.floor(math.log2(size / MIN_FEATURE_SIZE)))) for size in patch]
    stages = min(len(channels), max(pools) + 1)
    strides = [[1] * len(patch)] + [[2 if stage <= p else 1 for p in pools] for stage in range(1, stages)]
    return {"hidden_chs": channels[:stages], "strides": strides}


class UNetTrainer(SegmentationTrainer):
    """``SegmentationTrainer`` with ``bundle="unet"``; ``bundle_options`` go to ``make_unet2d``/``make_unet3d``."""

    bundle = "unet"

    def build_network(self, example_shape: Sequence[int]) -> nn.Module:
        options = self._options()
        if not {"hidden_chs", "strides"} & set(options.bundle_options):
            self.options = options.with_bundle_options(**plan_topology(example_shape[1:]))
        self.network = super().build_network(example_shape)
        return self.network

    def build_criterion(self) -> nn.Module:
        options = self._options()
        if not options.deep_supervision:
            return super().build_criterion()
        weights = self.deep_supervision_weights or deep_supervision_weights(len(self.network.output_strides))
        loss = segmentation_loss(options.num_classes, include_background=self.include_background)
        return DeepSupervisionWrapper(loss, weights)
