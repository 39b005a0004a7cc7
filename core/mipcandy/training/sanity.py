"""The check before the first epoch: one forward pass on a real batch, output shapes, parameters and MACs.

A network whose output does not fit the labels would otherwise fail deep inside the loss (or, worse, train on
broadcast garbage); here it stops with an error that names what was expected, what came out and the likely
cause. MACs come from ``torch.utils.flop_counter.FlopCounterMode`` on the same forward pass (MACs = FLOPs / 2,
per sample), so the network is built and run once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class SanityCheckError(ValueError):
    """The network's output does not fit the training labels."""


@dataclass(frozen=True)
class SanityCheckResult:
    """What the check measured; ``output_shapes`` lists one shape per output (several with deep supervision)."""

    num_params: int
    num_trainable_params: int
    macs_per_sample: int
    input_shape: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def check_outputs(outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor, num_classes: int,
                  deep_supervision: bool) -> tuple[tuple[int, ...], ...]:
    """Raise :class:`SanityCheckError` unless ``outputs`` fit ``labels`` (B, 1, *spatial); return the shapes."""
    expected = (labels.shape[0], num_classes, *labels.shape[2:])
    if isinstance(outputs, torch.Tensor):
        if deep_supervision:
            raise SanityCheckError(f"deep supervision is on, but the network returned one tensor of shape "
                                   f"{tuple(outputs.shape)} instead of a list of outputs (full resolution first): "
                                   "enable deep supervision in the network, or set deep_supervision=False")
        heads = [outputs]
    else:
        heads = list(outputs)
        if not deep_supervision:
            raise SanityCheckError(f"the network returned {len(heads)} outputs (shapes "
                                   f"{[tuple(h.shape) for h in heads]}), as deep supervision does, but "
                                   "deep_supervision is off: set deep_supervision=True, or switch it off in the "
                                   "network")
        if not heads:
            raise SanityCheckError("the network returned an empty list of outputs")
    got = tuple(heads[0].shape)
    if got != expected:
        hints = []
        if got[:1] == expected[:1] and len(got) == len(expected) and got[1] != num_classes:
            hints.append(f"the network has {got[1]} output channels but num_classes is {num_classes} (use 1 channel "
                         "for a binary sigmoid output, or one per class, background included, for softmax)")
        if len(got) != len(expected) or got[2:] != expected[2:]:
            hints.append("the spatial size differs from the labels' (does the patch size fit the network's "
                         "divisibility, or does the network need a padding module?)")
        raise SanityCheckError(f"network output shape {got} does not fit the labels: expected {expected} "
                               f"(batch, num_classes, *spatial). {' '.join(hints)}".rstrip())
    for i, head in enumerate(heads[1:], start=1):
        if head.shape[:2] != heads[0].shape[:2] or head.ndim != heads[0].ndim:
            raise SanityCheckError(f"deep supervision output {i} has shape {tuple(head.shape)}, which does not match "
                                   f"the full-resolution output {got} in batch size and channels")
    return tuple(tuple(h.shape) for h in heads)


def sanity_check(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                 deep_supervision: bool = False) -> SanityCheckResult:
    """Run ``model`` once on a real batch and check its output against ``labels``.

    The pass runs in training mode (what the loss will see, e.g. deep supervision outputs that only exist in
    training) without gradients; buffers such as normalisation running statistics are put back afterwards.
    """
    buffers = [b.detach().clone() for b in model.buffers()]
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            outputs = model(images)
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
    shapes = check_outputs(outputs, labels, num_classes, deep_supervision)
    total, trainable = count_params(model)
    macs = counter.get_total_flops() // 2 // max(1, images.shape[0])
    return SanityCheckResult(total, trainable, int(macs), tuple(images.shape), shapes)
