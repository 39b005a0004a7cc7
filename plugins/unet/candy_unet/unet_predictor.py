"""The U-Net bundle's predictor: the core predictor with the network built by this bundle.

When the experiment's ``bundle_options`` hold no ``hidden_chs``/``strides`` (a run whose config predates topology
planning, or options given by hand), the topology is planned from the training patch exactly as
:class:`~candy_unet.unet_trainer.UNetTrainer` plans it, so the checkpoint's layers line up.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from candy_unet.unet_trainer import plan_topology
from mipcandy.inference.predictor import Predictor


class UNetPredictor(Predictor):
    """``Predictor`` with ``bundle="unet"``; ``bundle_options`` go to ``make_unet2d``/``make_unet3d``."""

    bundle = "unet"

    def build_network(self, example_shape: Sequence[int]) -> nn.Module:
        if not {"hidden_chs", "strides"} & set(self.bundle_options):
            self.bundle_options = {**self.bundle_options, **plan_topology(example_shape[1:])}
        return super().build_network(example_shape)
