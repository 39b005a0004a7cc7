"""Telling cases, channels and classes apart in metric inputs.

Every metric takes a prediction and a reference of the same shape, laid out as

* ``(*spatial)``: one case, one binary mask or one label map;
* ``(C, *spatial)``: one case, channel first (the project's case layout);
* ``(B, C, *spatial)``: a batch of cases.

The number of spatial dimensions comes from ``spatial_dims`` if given, else from the length of a
``spacing`` sequence. Without either, only the unambiguous ranks are accepted: 2D tensors are ``(H, W)``
and 5D tensors ``(B, C, D, H, W)``. A 3D tensor may be ``(C, H, W)`` or ``(D, H, W)`` and a 4D tensor
``(B, C, H, W)`` or ``(C, D, H, W)``; guessing would silently score the wrong axes, so these raise.

Integer tensors are label maps of class ids and must have a single channel; bool and floating tensors
are masks whose channels are the classes, and must hold only 0 and 1.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

Spacing = float | Sequence[float] | None
# Elements per step of chunked passes: large enough to vectorise, small enough that temporaries stay in
# cache (whole-volume temporaries cost more in page faults than the arithmetic).
CHUNK = 1 << 20


@contextmanager
def single_threaded_torch() -> Iterator[int]:
    """Run torch on one thread inside the block and yield the caller's thread count.

    The metrics' torch passes are memory-bound and gain little from threads, while idle OpenMP workers
    spinning beside SimpleITK's threads, or waiting at barriers on a busy machine, cost several times
    more. SimpleITK gets the yielded count, so ``torch.set_num_threads`` still bounds the parallelism.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def resolve_spatial_dims(tensor: Tensor, spatial_dims: int | None, spacing: Spacing) -> int:
    """The number of spatial dimensions of ``tensor``, from the explicit argument, the spacing or the rank."""
    if spatial_dims is None:
        if spacing is not None and not isinstance(spacing, int | float):
            spatial_dims = len(spacing)
        elif tensor.ndim in (2, 5):
            spatial_dims = 2 if tensor.ndim == 2 else 3
        else:
            readings = {3: "(C, H, W) or (D, H, W)", 4: "(B, C, H, W) or (C, D, H, W)"}
            raise ValueError(
                f"a {tensor.ndim}D input of shape {tuple(tensor.shape)} is ambiguous"
                f"{': ' + readings[tensor.ndim] if tensor.ndim in readings else ''}; pass spatial_dims=2 or 3, "
                "or a spacing with one value per spatial axis"
            )
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if tensor.ndim - spatial_dims not in (0, 1, 2):
        raise ValueError(
            f"a {spatial_dims}D metric input must be (*spatial), (C, *spatial) or (B, C, *spatial), i.e. have "
            f"{spatial_dims} to {spatial_dims + 2} dimensions, but got shape {tuple(tensor.shape)}"
        )
    return spatial_dims


def resolve_spacing(spacing: Spacing, spatial_dims: int) -> tuple[float, ...]:
    """Per-axis voxel spacing in tensor axis order; ``None`` means 1 (distances in voxels)."""
    if spacing is None:
        values = (1.0,) * spatial_dims
    elif isinstance(spacing, int | float):
        values = (float(spacing),) * spatial_dims
    else:
        values = tuple(float(s) for s in spacing)
    if len(values) != spatial_dims:
        raise ValueError(f"spacing {tuple(values)} has {len(values)} values but the data is {spatial_dims}D")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    return values


def to_batch(tensor: Tensor, spatial_dims: int) -> Tensor:
    """View ``tensor`` as ``(B, C, *spatial)``."""
    missing = 2 - (tensor.ndim - spatial_dims)
    return tensor.reshape((1,) * missing + tuple(tensor.shape))


def check_pair(outputs: Tensor, labels: Tensor) -> None:
    """Fail early on inputs that cannot be compared."""
    for name, value in (("outputs", outputs), ("labels", labels)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.is_complex():
            raise TypeError(f"{name} must be a real tensor, got {value.dtype}")
    if outputs.device != labels.device:
        raise ValueError(f"outputs are on {outputs.device} but labels on {labels.device}; move both to one device")
    if outputs.shape != labels.shape:
        raise ValueError(
            f"outputs and labels must have the same shape, got {tuple(outputs.shape)} and {tuple(labels.shape)}"
        )
    if not outputs.numel():
        raise ValueError(f"outputs and labels are empty (shape {tuple(outputs.shape)}); there is nothing to score")


def is_label_map(tensor: Tensor) -> bool:
    """Integer tensors hold class ids; bool and floating tensors hold masks."""
    return not tensor.is_floating_point() and tensor.dtype != torch.bool


def pieces(tensor: Tensor) -> Iterator[Tensor]:
    """Views of at most about ``CHUNK`` elements that together cover ``tensor`` (no copy, any strides)."""
    if tensor.numel() <= CHUNK or tensor.ndim == 0:
        yield tensor
    elif tensor.ndim == 1:
        yield from (tensor[start : start + CHUNK] for start in range(0, len(tensor), CHUNK))
    elif tensor[0].numel() <= CHUNK // 2:
        step = CHUNK // tensor[0].numel()
        yield from (tensor[start : start + step] for start in range(0, len(tensor), step))
    else:
        for part in tensor:
            yield from pieces(part)


def check_mask(tensor: Tensor, name: str) -> None:
    """Fail unless ``tensor`` is bool or holds only 0 and 1.

    ``x * x == x`` holds exactly for 0 and 1 only (NaN fails it; integer overflow wraps without aliasing),
    and is the fastest exact test.
    """
    if tensor.dtype == torch.bool:
        return
    for part in pieces(tensor):
        if not torch.equal(part * part, part):
            bad = part[(part != 0) & (part != 1)][0].item()
            raise ValueError(
                f"{name} must be a mask holding only 0 and 1, but holds {bad}; threshold probabilities first "
                "(e.g. probs > 0.5), or pass integer class ids to a multi-class metric"
            )


@dataclass(frozen=True)
class Segmentations:
    """A prediction and a reference as ``(B, C, *spatial)`` masks or ``(B, 1, *spatial)`` label maps.

    ``classes`` lists the class ids scored for label maps (one result column each) and is ``None`` for
    masks, whose channels are the classes.
    """

    outputs: Tensor
    labels: Tensor
    classes: tuple[int, ...] | None
    batched: bool

    @property
    def shape(self) -> tuple[int, int]:
        """(cases, scored classes)."""
        width = self.outputs.shape[1] if self.classes is None else len(self.classes)
        return self.outputs.shape[0], width

    def masks(self, case: int, column: int) -> tuple[Tensor, Tensor]:
        """The predicted and reference masks of one (case, class): bool for label maps, else as given."""
        if self.classes is None:
            return self.outputs[case, column], self.labels[case, column]
        class_id = self.classes[column]
        return self.outputs[case, 0] == class_id, self.labels[case, 0] == class_id

    def counts(self) -> tuple[Tensor, Tensor, Tensor]:
        """True positives, predicted and reference voxel counts, each ``(B, C)`` float64 (exact)."""
        cases, channels = self.outputs.shape[:2]
        outputs, labels = self.outputs.reshape(cases, channels, -1), self.labels.reshape(cases, channels, -1)
        if self.classes is None:
            return _mask_counts(outputs, labels)
        size = max(self.classes) + 1
        confusion = _confusion(outputs[:, 0], labels[:, 0], size).view(cases, size, size).double()
        keep = torch.tensor(self.classes, device=confusion.device)
        tp = confusion.diagonal(dim1=1, dim2=2)[:, keep]
        return tp, confusion.sum(2)[:, keep], confusion.sum(1)[:, keep]


def _mask_counts(outputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per (case, channel) overlap and sizes of ``(B, C, N)`` 0/1 masks, summed chunk by chunk in float32.

    Every chunk sum is an integer below 2**24, so it is exact, and the float64 totals are exact too.
    """
    totals = torch.zeros(3, *outputs.shape[:2], dtype=torch.float64, device=outputs.device)
    step = max(1, CHUNK // (outputs.shape[0] * outputs.shape[1]))
    for start in range(0, outputs.shape[2], step):
        out = outputs[..., start : start + step].float()
        lab = labels[..., start : start + step].float()
        totals[0] += torch.einsum("bcn,bcn->bc", out, lab)
        totals[1] += out.sum(2)
        totals[2] += lab.sum(2)
    return totals[0], totals[1], totals[2]


def _confusion(outputs: Tensor, labels: Tensor, size: int) -> Tensor:
    """``(B, size * size)`` confusion counts (prediction-major) of ``(B, N)`` label maps."""
    cases = outputs.shape[0]
    offset = torch.arange(cases, device=outputs.device).view(-1, 1) * (size * size)
    confusion = torch.zeros(cases * size * size, dtype=torch.int64, device=outputs.device)
    step = max(1, CHUNK // cases)
    for start in range(0, outputs.shape[1], step):
        pairs = outputs[:, start : start + step].long() * size + labels[:, start : start + step] + offset
        confusion += torch.bincount(pairs.flatten(), minlength=confusion.numel())
    return confusion.view(cases, -1)


def parse_segmentations(
    outputs: Tensor,
    labels: Tensor,
    *,
    num_classes: int | None,
    include_background: bool,
    spatial_dims: int | None,
    spacing: Spacing = None,
    binary: bool = False,
    check_values: bool = True,
) -> tuple[Segmentations, int]:
    """Validate a prediction/reference pair and bring it to the ``(B, C, *spatial)`` form.

    ``binary`` reads integer tensors as 0/1 masks instead of label maps. ``check_values=False`` leaves
    mask values to the caller (who may check only where they are nonzero). Returns the segmentations and
    the number of spatial dimensions.
    """
    check_pair(outputs, labels)
    dims = resolve_spatial_dims(outputs, spatial_dims, spacing)
    batched = outputs.ndim - dims == 2
    label_maps = not binary and is_label_map(outputs)
    if not binary and label_maps != is_label_map(labels):
        raise ValueError(
            f"outputs ({outputs.dtype}) and labels ({labels.dtype}) must both be label maps (integer ids) or both "
            "masks (bool or float one-hot)"
        )
    outputs, labels = to_batch(outputs, dims), to_batch(labels, dims)
    if not label_maps:
        if check_values:
            check_mask(outputs, "outputs")
            check_mask(labels, "labels")
        return Segmentations(outputs, labels, None, batched), dims
    if outputs.shape[1] != 1:
        raise ValueError(
            f"label maps (integer class ids) need a single channel, got {outputs.shape[1]} in shape "
            f"{tuple(outputs.shape)}; pass one-hot masks as bool or float tensors instead"
        )
    low = int(torch.minimum(outputs.min(), labels.min()))
    high = int(torch.maximum(outputs.max(), labels.max()))
    if num_classes is None:
        num_classes = max(2, high + 1)
    if low < 0 or high >= num_classes:
        raise ValueError(f"class ids must lie in [0, {num_classes}), found ids from {low} to {high}")
    classes = tuple(range(0 if include_background else 1, num_classes))
    if not classes:
        raise ValueError(f"no class to score: num_classes={num_classes} with include_background=False")
    return Segmentations(outputs, labels, classes, batched), dims
