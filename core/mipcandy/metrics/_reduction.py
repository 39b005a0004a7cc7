"""NaN-ignoring reduction of per-(case, class) metric values."""
from __future__ import annotations

from typing import Literal

from torch import Tensor

Reduction = Literal["mean", "median", "sum", "none"]
REDUCTIONS = ("mean", "median", "sum", "none")


def check_reduction(reduction: str) -> None:
    """Reject unknown reductions before any work is done."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_values(values: Tensor, reduction: Reduction) -> Tensor:
    """Reduce all values to a scalar, skipping NaN (so ``if_empty=nan`` drops empty classes).

    The median averages the two middle values, as ``numpy.median`` does. An all-NaN input reduces to NaN
    (0 for the sum).
    """
    check_reduction(reduction)
    if reduction == "none":
        return values
    flat = values.flatten()
    if reduction == "mean":
        return flat.nanmean()
    if reduction == "sum":
        return flat.nansum()
    ordered = flat[~flat.isnan()].sort().values
    if not len(ordered):
        return flat.new_tensor(float("nan"))
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
