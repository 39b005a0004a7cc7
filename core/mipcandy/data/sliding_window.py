"""Gaussian sliding-window inference over a whole case (2D or 3D), with optional mirroring TTA.

Behaviour follows nnU-Net v2's predictor: windows of ``patch_size`` overlap by ``overlap`` (0.5 = step 0.5),
every window's **logits** are weighted by a Gaussian importance map (sigma = patch / 8) and summed, and the sum is
divided by the summed weights once at the end; probabilities/labels are derived from the aggregated logits
(:func:`predict_probabilities`, :func:`predict_labels`). MONAI instead aggregates whatever its predictor returns;
``activation=`` reproduces that (applied per window, before weighting).

Window placement (``steps=``):

- ``"nnunet"`` (default, nnU-Net's ``compute_steps_for_sliding_window``): ``n = ceil((size - patch) /
  (patch * (1 - overlap))) + 1`` windows per axis, evenly spaced from 0 to ``size - patch`` (starts rounded).
- ``"monai"`` (MONAI's ``_get_scan_interval`` + ``dense_patch_slices``): a fixed interval
  ``int(patch * (1 - overlap))`` from 0, and the last window shifted back to end at ``size - patch``, so the
  last two windows may overlap more than the rest.

Both agree whenever ``size - patch`` is a multiple of the interval (e.g. 192 voxels, 96-voxel patches, overlap
0.5: starts 0, 48, 96) and differ otherwise (150/96/0.5: nnU-Net 0, 27, 54; MONAI 0, 48, 54).

Importance map: ``exp(-x^2 / (2 sigma^2))`` per axis with ``x`` measured from the geometric centre
``(patch - 1) / 2`` (MONAI's ``compute_importance_map``; nnU-Net filters a delta at ``patch // 2``, half a voxel
off-centre for even sizes), multiplied over axes (peak 1) and clamped below at 1e-3 so that window borders keep a
small, non-zero weight. Images smaller than the patch are zero-padded symmetrically (extra voxel after) and the
result is cropped back, as both references do.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from itertools import combinations, product
from typing import Literal

import torch
import torch.nn.functional as F
from rich.progress import track
from torch import Tensor, nn

from mipcandy.data.postprocess import logits_to_labels, logits_to_probabilities

StepsMode = Literal["nnunet", "monai"]
Activation = Literal["softmax", "sigmoid"]
Network = Callable[[Tensor], "Tensor | Sequence[Tensor]"]

MIN_IMPORTANCE = 1e-3

__all__ = [
    "gaussian_importance_map",
    "predict_labels",
    "predict_probabilities",
    "sliding_window_inference",
    "window_slices",
    "window_starts",
]


def window_starts(size: int, patch: int, overlap: float, steps: StepsMode = "nnunet") -> list[int]:
    """Start offsets of the windows along one axis (``size >= patch``); the first is 0, the last ``size - patch``."""
    if patch < 1 or size < patch:
        raise ValueError(f"window_starts needs 1 <= patch <= size, got patch {patch} and size {size}; "
                         "pad the image to at least the patch size first")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    span = size - patch
    if span == 0:
        return [0]
    if steps == "nnunet":
        count = math.ceil(span / (patch * (1.0 - overlap))) + 1
        spacing = span / (count - 1)
        return sorted({round(spacing * i) for i in range(count)})
    if steps == "monai":
        interval = max(int(patch * (1.0 - overlap)), 1)
        count = math.ceil(span / interval) + 1
        return sorted({min(i * interval, span) for i in range(count)})
    raise ValueError(f"steps must be 'nnunet' or 'monai', got {steps!r}")


def window_slices(shape: Sequence[int], patch_size: Sequence[int], overlap: float | Sequence[float] = 0.5,
                  steps: StepsMode = "nnunet") -> list[tuple[slice, ...]]:
    """Every window of ``patch_size`` in an image of spatial ``shape`` (C order: the last axis moves fastest)."""
    overlaps = _per_axis(overlap, len(shape), "overlap")
    if len(patch_size) != len(shape):
        raise ValueError(f"patch_size {tuple(patch_size)} has {len(patch_size)} axes but the image shape "
                         f"{tuple(shape)} has {len(shape)}")
    per_axis = [[slice(s, s + p) for s in window_starts(n, p, o, steps)]
                for n, p, o in zip(shape, patch_size, overlaps, strict=True)]
    return list(product(*per_axis))


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float | Sequence[float] = 0.125, *,
                            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Window weights favouring the centre, where a network has the most context (see module docstring)."""
    scales = _per_axis(sigma_scale, len(patch_size), "sigma_scale")
    weights: Tensor | None = None
    for p, scale in zip(patch_size, scales, strict=True):
        x = torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2.0
        g = torch.exp(-(x * x) / (2.0 * (scale * p) ** 2))
        weights = g if weights is None else weights.unsqueeze(-1) * g
    if weights is None:
        raise ValueError("patch_size must have at least one axis")
    return weights.clamp_(min=MIN_IMPORTANCE).to(dtype)


def sliding_window_inference(image: Tensor, network: Network, patch_size: Sequence[int], *,
                             overlap: float | Sequence[float] = 0.5, batch_size: int = 4, gaussian: bool = True,
                             sigma_scale: float | Sequence[float] = 0.125, steps: StepsMode = "nnunet",
                             mirror_axes: Sequence[int] | None = None, activation: Activation | None = None,
                             num_classes: int | None = None, device: torch.device | str | None = None,
                             buffer_device: torch.device | str | None = None, amp: bool | None = None,
                             progress: bool = False) -> Tensor:
    """Aggregated network output for a whole case: float32 ``(num_classes, *spatial)`` on ``buffer_device``.

    ``image`` is ``(C, *spatial)`` or ``(1, C, *spatial)``. ``batch_size`` windows go through ``network`` per
    forward; windows run on ``device`` (default: the network's device) while the aggregation buffers live on
    ``buffer_device`` (default: the image's device; ``"cpu"`` keeps large volumes off the accelerator). A network
    returning a list/tuple (deep supervision) contributes its first, full-resolution output. ``mirror_axes``
    (spatial axes, 0-based) averages the logits over all ``2^k`` flip combinations per window (nnU-Net's TTA).
    ``activation`` is applied per window before weighting (MONAI-style); the default aggregates logits.
    ``amp`` autocasts the forward passes (default: on for CUDA). Runs under ``torch.inference_mode()`` with the
    network in eval mode; every module's previous mode is restored afterwards.
    """
    patch = tuple(int(p) for p in patch_size)
    batched = _as_batched(image, patch)
    if batch_size < 1:
        raise ValueError(f"batch_size (windows per forward) must be >= 1, got {batch_size}")
    flips = _flip_combinations(mirror_axes, len(patch))
    run_device = torch.device(device) if device is not None else _network_device(network, batched.device)
    out_device = torch.device(buffer_device) if buffer_device is not None else batched.device
    use_amp = run_device.type == "cuda" if amp is None else amp
    padded, crop = _pad_to(batched, patch)
    spatial = tuple(padded.shape[2:])
    slices = window_slices(spatial, patch, overlap, steps)
    scales = tuple(_per_axis(sigma_scale, len(patch), "sigma_scale"))
    with torch.inference_mode(), _eval_mode(network):
        weight_map = _importance_map(patch, scales, gaussian, str(run_device))
        out_weight_map = _importance_map(patch, scales, gaussian, str(out_device))
        weights = torch.zeros((1, *spatial), dtype=torch.float32, device=out_device)
        values = None if num_classes is None else weights.new_zeros((num_classes, *spatial))
        autocast = torch.autocast(run_device.type) if use_amp else nullcontext()
        batches = range(0, len(slices), batch_size)
        for first in track(batches, description=f"Sliding window ({len(slices)} windows)", disable=not progress,
                           transient=True):
            chunk = slices[first:first + batch_size]
            windows = torch.cat([padded[(slice(None), slice(None), *s)] for s in chunk]).to(run_device)
            with autocast:
                logits = _predict_windows(network, windows, flips)
            predictions = _activate(logits.float(), activation)
            values = _checked_buffer(values, predictions, patch, spatial, weights)
            # One in-place multiply per batch, on the compute device before any transfer, profiled faster on CPU
            # than a fused per-window addcmul_ into the strided buffer (the network's output is not reused).
            weighted = predictions.mul_(weight_map) if predictions.is_contiguous() else predictions * weight_map
            for prediction, s in zip(weighted.to(out_device), chunk, strict=True):
                values[(slice(None), *s)] += prediction
                weights[(slice(None), *s)] += out_weight_map
        assert values is not None  # at least one window always runs
        values /= weights
    return values[(slice(None), *crop)]


def predict_probabilities(image: Tensor, network: Network, patch_size: Sequence[int], **options) -> Tensor:
    """Softmax (multi-class) or sigmoid (one channel) of the aggregated logits; options as sliding_window_inference."""
    return logits_to_probabilities(sliding_window_inference(image, network, patch_size, **options))


def predict_labels(image: Tensor, network: Network, patch_size: Sequence[int], **options) -> Tensor:
    """int64 ``(1, *spatial)`` label map: argmax, or logit > 0 for one-channel binary networks."""
    return logits_to_labels(sliding_window_inference(image, network, patch_size, **options))


def _per_axis(value: float | Sequence[float], ndim: int, name: str) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)] * ndim
    values = [float(v) for v in value]
    if len(values) != ndim:
        raise ValueError(f"{name} has {len(values)} entries but the patch has {ndim} axes")
    return values


def _as_batched(image: Tensor, patch: tuple[int, ...]) -> Tensor:
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not patch or min(patch) < 1:
        raise ValueError(f"patch_size must be positive on every axis, got {patch}")
    ndim = len(patch)
    if image.ndim == ndim + 1:
        image = image.unsqueeze(0)
    elif image.ndim != ndim + 2 or image.shape[0] != 1:
        raise ValueError(f"image of shape {tuple(image.shape)} does not fit a {ndim}D patch {patch}: pass "
                         f"(C, *spatial) or (1, C, *spatial) with {ndim} spatial axes (one case at a time)")
    return image if image.is_floating_point() else image.float()


def _network_device(network: Network, fallback: torch.device) -> torch.device:
    if isinstance(network, nn.Module):
        for tensor in (*network.parameters(), *network.buffers()):
            return tensor.device
    return fallback


def _flip_combinations(axes: Sequence[int] | None, ndim: int) -> list[tuple[int, ...]]:
    """Tensor dims to flip for each TTA pass, starting with the unflipped one."""
    axes = tuple(axes or ())
    if len(set(axes)) != len(axes) or any(not 0 <= a < ndim for a in axes):
        raise ValueError(f"mirror_axes must be distinct spatial axes in 0..{ndim - 1}, got {axes}")
    dims = [a + 2 for a in axes]
    return [combo for k in range(len(dims) + 1) for combo in combinations(dims, k)]


def _pad_to(image: Tensor, patch: tuple[int, ...]) -> tuple[Tensor, tuple[slice, ...]]:
    """Zero-pad spatial axes shorter than the patch (half before, the rest after); the crop that undoes it."""
    before = [max(p - n, 0) // 2 for n, p in zip(image.shape[2:], patch, strict=True)]
    after = [max(p - n, 0) - b for n, p, b in zip(image.shape[2:], patch, before, strict=True)]
    crop = tuple(slice(b, b + n) for b, n in zip(before, image.shape[2:], strict=True))
    if not any(before) and not any(after):
        return image, crop
    pads = [v for b, a in zip(reversed(before), reversed(after), strict=True) for v in (b, a)]
    return F.pad(image, pads), crop


@lru_cache(maxsize=8)
def _importance_map(patch: tuple[int, ...], scales: tuple[float, ...], gaussian: bool, device: str) -> Tensor:
    """Built once per (patch, sigma, device); only used inside inference_mode and never written to."""
    if gaussian:
        return gaussian_importance_map(patch, scales, device=device)
    return torch.ones(patch, dtype=torch.float32, device=device)


@contextmanager
def _eval_mode(network: Network) -> Iterator[None]:
    modules = list(network.modules()) if isinstance(network, nn.Module) else []
    previous = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(modules, previous, strict=True):
            m.training = mode


def _forward(network: Network, windows: Tensor) -> Tensor:
    output = network(windows)
    if isinstance(output, list | tuple):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(f"network returned {type(output).__name__}; expected a Tensor or a list/tuple of Tensors "
                        "(deep supervision, full resolution first)")
    return output


def _predict_windows(network: Network, windows: Tensor, flips: list[tuple[int, ...]]) -> Tensor:
    """Logits for a batch of windows, averaged over the mirror combinations (the first is no flip)."""
    if len(flips) == 1:
        return _forward(network, windows)
    total = _forward(network, windows).to(torch.float32, copy=True)
    for dims in flips[1:]:
        total += _forward(network, windows.flip(dims)).flip(dims)
    return total / len(flips)


def _activate(logits: Tensor, activation: Activation | None) -> Tensor:
    if activation is None:
        return logits
    if activation == "softmax":
        return logits.softmax(1)
    if activation == "sigmoid":
        return logits.sigmoid()
    raise ValueError(f"activation must be None, 'softmax' or 'sigmoid', got {activation!r}")


def _checked_buffer(values: Tensor | None, predictions: Tensor, patch: tuple[int, ...], spatial: tuple[int, ...],
                    weights: Tensor) -> Tensor:
    """The value buffer (allocated at the first batch), after checking the network's output layout against it."""
    if predictions.ndim != len(patch) + 2 or tuple(predictions.shape[2:]) != patch:
        raise ValueError(f"network output of shape {tuple(predictions.shape)} does not match the windows "
                         f"(N, C, *{patch}): sliding-window inference needs an output at the input resolution")
    if values is None:
        return weights.new_zeros((predictions.shape[1], *spatial))
    if values.shape[0] != predictions.shape[1]:
        raise ValueError(f"network returned {predictions.shape[1]} channels but num_classes is {values.shape[0]}")
    return values
