"""Adapters giving MONAI's deep-supervised networks the ``mipcandy.DeepSupervisedNetwork`` switch.

Both start with deep supervision off (one ``(B, C, *spatial)`` tensor). Switched on, they return a list with the
network's final output first. MONAI computes every head at full resolution (DynUNet interpolates its heads up;
UNet++'s nested decoders all end at full resolution), so the list is not a resolution pyramid: the loss resizes
nothing, and weighs the heads with nnU-Net's 1/2^i in list order.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MONAIHeads(nn.Module):
    """Switches a MONAI network's ``deep_supervision`` attribute and turns what it returns into the protocol's form."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.set_deep_supervision(False)

    def set_deep_supervision(self, enabled: bool) -> None:
        """Return every head (``True``) or the final output only (``False``)."""
        self.network.deep_supervision = enabled

    def collect(self, outputs: Any, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The protocol's form of ``outputs``: a tensor without deep supervision, else a list, final output first."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.collect(self.network(x), x)


class DynUNetHeads(MONAIHeads):
    """MONAI ``DynUNet`` built with its heads: in training with deep supervision on, its stacked ``(B, N, C, ...)``
    output becomes a list of N tensors (final output first, then the heads from the highest resolution down)."""

    def collect(self, outputs: torch.Tensor, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if not self.network.deep_supervision:
            return outputs
        return list(outputs.unbind(1)) if outputs.ndim == x.ndim + 1 else [outputs]  # no heads in eval mode


class UNetPlusPlusHeads(MONAIHeads):
    """MONAI ``BasicUNetPlusPlus``: the one-element list it returns without deep supervision becomes a tensor, and
    its four nested outputs (shallowest first) become a list with the final, deepest one first."""

    def collect(self, outputs: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return outputs[::-1] if self.network.deep_supervision else outputs[0]
