"""Surface metrics per (case, class): HD95, ASSD and NSD (surface Dice), in physical units.

Inputs follow the layouts of :mod:`mipcandy.metrics._layout`; ``spacing`` is the voxel size per spatial
axis in tensor axis order ((z, y, x) for 3D), and also fixes the number of spatial dimensions. Without it,
distances are in voxels. Boundaries and distances follow MONAI (see :mod:`mipcandy.metrics._distance`):
boundary voxels of the prediction and of the reference, each measured to the nearest boundary voxel of
the other side.

* ``hd95``: the larger of the two directed ``percentile``-th percentiles (linear interpolation, like
  ``torch.quantile``), as ``HausdorffDistanceMetric(percentile=95)``; ``percentile=100`` is the classic HD.
* ``assd``: the mean of all distances of both sides pooled, as
  ``SurfaceDistanceMetric(symmetric=True)`` (not the mean of the two directed means).
* ``nsd``: the share of boundary voxels of both sides within ``tolerance`` of the other boundary, as
  ``SurfaceDiceMetric`` with its default ``use_subvoxels=False`` (voxels counted, not surface areas as in
  DeepMind's surface-distance package). Distances exactly at the tolerance count as within.

Empty cases, and where they differ from MONAI:

* class absent from both sides: ``if_empty`` (0 for distances, 1 for NSD: a perfect prediction);
  MONAI returns NaN. Pass ``if_empty=float("nan")`` for MONAI's behaviour; every reduction skips NaN.
* class on one side only: infinite HD95 and ASSD, NSD 0. MONAI agrees, except that its HD95 (any
  percentile below 100) is NaN there, an artefact of interpolating between infinities, so such cases
  silently drop out of its NaN-ignoring means.

``include_background`` applies to label maps only (id 0), defaulting to ``False`` as MONAI's surface
metrics do; mask channels are all scored as given.

Cost: per (case, class), two distance transforms over the bounding box of both masks (plus a pass over the
full volume to find it); :func:`surface_metrics` shares them between all three metrics, and
:class:`SharedSurfaceMetrics` between any set of these functions with their options fixed by
``functools.partial`` (as the :class:`~mipcandy.evaluation.Evaluator` takes them). SimpleITK runs on
``torch.get_num_threads()`` threads while torch itself runs single-threaded during the call.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from functools import partial
from itertools import product
from typing import Any

import torch
from torch import Tensor

from mipcandy.metrics._distance import SurfaceDistances, surface_distances
from mipcandy.metrics._layout import Spacing, parse_segmentations, resolve_spacing, single_threaded_torch
from mipcandy.metrics._reduction import Reduction, check_reduction, reduce_values

__all__ = ["SharedSurfaceMetrics", "assd", "hd95", "nsd", "surface_metrics"]

Measure = Callable[[SurfaceDistances, int], float]


def _percentile(values: Tensor, percentile: float) -> float:
    """Linear-interpolation percentile, the definition of ``torch.quantile`` and ``numpy.percentile``."""
    position = percentile / 100 * (len(values) - 1)
    low = math.floor(position)
    value = float(values.kthvalue(low + 1).values)
    if position == low:
        return value
    return value + (float(values.kthvalue(low + 2).values) - value) * (position - low)


def _hausdorff(percentile: float, if_empty: float) -> Measure:
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")

    def measure(distances: SurfaceDistances, _: int) -> float:
        if distances.both_empty:
            return if_empty
        if distances.one_empty:
            return math.inf
        forward = _percentile(distances.pred_to_label, percentile)
        return max(forward, _percentile(distances.label_to_pred, percentile))

    return measure


def _average(if_empty: float) -> Measure:
    def measure(distances: SurfaceDistances, _: int) -> float:
        if distances.both_empty:
            return if_empty
        return float(torch.cat([distances.pred_to_label, distances.label_to_pred]).mean())

    return measure


def _surface_dice(tolerance: float | Sequence[float], if_empty: float, columns: int) -> Measure:
    values = (tolerance,) if isinstance(tolerance, int | float) else tuple(tolerance)
    if not values or not all(math.isfinite(t) and t >= 0 for t in values):
        raise ValueError(f"tolerance must be finite and >= 0 (mm), got {tolerance}")
    if len(values) not in (1, columns):
        raise ValueError(f"{len(values)} tolerances given for {columns} scored classes; give one, or one per class")
    tolerances = values * columns if len(values) == 1 else values

    def measure(distances: SurfaceDistances, column: int) -> float:
        if distances.both_empty:
            return if_empty
        total = len(distances.pred_to_label) + len(distances.label_to_pred)
        return distances.count_within(float(tolerances[column])) / total

    return measure


def _evaluate(
    outputs: Tensor,
    labels: Tensor,
    build: Callable[[int], dict[str, Measure]],
    *,
    spacing: Spacing,
    num_classes: int | None,
    include_background: bool,
    reduction: Reduction,
    spatial_dims: int | None,
) -> dict[str, Tensor]:
    """Run every measure on the boundary distances of each (case, class), computed once.

    ``build`` makes the measures once the number of scored classes is known.
    """
    check_reduction(reduction)
    segmentations, dims = parse_segmentations(
        outputs,
        labels,
        num_classes=num_classes,
        include_background=include_background,
        spatial_dims=spatial_dims,
        spacing=spacing,
        check_values=False,
    )
    voxel = resolve_spacing(spacing, dims)
    cases, columns = segmentations.shape
    measures = build(columns)
    values = {name: torch.empty(cases, columns, dtype=torch.float64) for name in measures}
    with single_threaded_torch() as threads:
        for case, column in product(range(cases), range(columns)):
            distances = surface_distances(*segmentations.masks(case, column), voxel, threads)
            for name, measure in measures.items():
                values[name][case, column] = measure(distances, column)
    results = {}
    for name, table in values.items():
        table = table.to(device=outputs.device, dtype=torch.float32)
        results[name] = reduce_values(table if segmentations.batched else table[0], reduction)
    return results


def hd95(
    outputs: Tensor,
    labels: Tensor,
    *,
    spacing: Spacing = None,
    percentile: float = 95.0,
    num_classes: int | None = None,
    include_background: bool = False,
    if_empty: float = 0.0,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> Tensor:
    """Percentile Hausdorff distance (mm with ``spacing``) per (case, class)."""
    measure = _hausdorff(percentile, if_empty)
    return _evaluate(
        outputs,
        labels,
        lambda _: {"hd": measure},
        spacing=spacing,
        num_classes=num_classes,
        include_background=include_background,
        reduction=reduction,
        spatial_dims=spatial_dims,
    )["hd"]


def assd(
    outputs: Tensor,
    labels: Tensor,
    *,
    spacing: Spacing = None,
    num_classes: int | None = None,
    include_background: bool = False,
    if_empty: float = 0.0,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> Tensor:
    """Average symmetric surface distance (mm with ``spacing``) per (case, class)."""
    return _evaluate(
        outputs,
        labels,
        lambda _: {"assd": _average(if_empty)},
        spacing=spacing,
        num_classes=num_classes,
        include_background=include_background,
        reduction=reduction,
        spatial_dims=spatial_dims,
    )["assd"]


def nsd(
    outputs: Tensor,
    labels: Tensor,
    *,
    tolerance: float | Sequence[float],
    spacing: Spacing = None,
    num_classes: int | None = None,
    include_background: bool = False,
    if_empty: float = 1.0,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> Tensor:
    """Normalised surface distance (surface Dice) at ``tolerance`` mm, one value or one per scored class."""
    return _evaluate(
        outputs,
        labels,
        lambda columns: {"nsd": _surface_dice(tolerance, if_empty, columns)},
        spacing=spacing,
        num_classes=num_classes,
        include_background=include_background,
        reduction=reduction,
        spatial_dims=spatial_dims,
    )["nsd"]


def surface_metrics(
    outputs: Tensor,
    labels: Tensor,
    *,
    tolerance: float | Sequence[float],
    spacing: Spacing = None,
    num_classes: int | None = None,
    include_background: bool = False,
    if_empty: float | None = None,
    reduction: Reduction = "mean",
    spatial_dims: int | None = None,
) -> dict[str, Tensor]:
    """HD95, ASSD and NSD from one distance computation (about a third of the cost of three calls).

    ``if_empty=None`` keeps each metric's default (0, 0, 1); a number (typically NaN) applies to all three.
    """
    distance_empty = 0.0 if if_empty is None else if_empty

    def build(columns: int) -> dict[str, Measure]:
        return {
            "hd95": _hausdorff(95.0, distance_empty),
            "assd": _average(distance_empty),
            "nsd": _surface_dice(tolerance, 1.0 if if_empty is None else if_empty, columns),
        }

    return _evaluate(
        outputs,
        labels,
        build,
        spacing=spacing,
        num_classes=num_classes,
        include_background=include_background,
        reduction=reduction,
        spatial_dims=spatial_dims,
    )


def _surface_call(fn: Callable[..., Any]) -> tuple[Callable[..., Tensor], dict[str, Any]] | None:
    """The surface metric behind ``fn`` and its keyword options, or None if ``fn`` is no (partial of a) surface metric.

    Options are bound to the metric's signature with its defaults filled in, so unknown or missing ones fail here
    as the call itself would.
    """
    keywords: dict[str, Any] = {}
    while isinstance(fn, partial):
        if fn.args:
            return None
        keywords = {**fn.keywords, **keywords}  # an outer partial overrides an inner one
        fn = fn.func
    if fn not in (hd95, assd, nsd):
        return None
    bound = inspect.signature(fn).bind(None, None, **keywords)
    bound.apply_defaults()
    options = dict(bound.arguments)
    check_reduction(options["reduction"])
    return fn, options


def _measure(fn: Callable[..., Tensor], options: dict[str, Any], columns: int) -> Measure:
    """The measure ``fn(..., **options)`` computes per (case, class), for ``columns`` scored classes."""
    if fn is hd95:
        return _hausdorff(options["percentile"], options["if_empty"])
    if fn is assd:
        return _average(options["if_empty"])
    return _surface_dice(options["tolerance"], options["if_empty"], columns)


class SharedSurfaceMetrics:
    """Several of :func:`hd95`, :func:`assd` and :func:`nsd` on the same inputs, from one distance computation.

    Each metric is one of these functions or a ``functools.partial`` of one with keyword options (e.g.
    ``partial(nsd, tolerance=2.0)``). Calling the set gives, in order, ``float(fn(outputs, labels,
    spacing=spacing, spatial_dims=spatial_dims))`` for each metric, where a ``spacing`` or ``spatial_dims`` of
    None leaves the metric's own option, as an omitted keyword would. Metrics share the boundaries and their
    distances unless they differ in spacing, ``spatial_dims``, ``num_classes`` or ``include_background``.
    """

    def __init__(self, metrics: Sequence[Callable[..., Any]]) -> None:
        calls = [_surface_call(fn) for fn in metrics]
        unsupported = [fn for fn, call in zip(metrics, calls, strict=True) if call is None]
        if unsupported:
            raise TypeError(f"SharedSurfaceMetrics takes hd95, assd and nsd (or partials of them with keyword "
                            f"options only), got {unsupported}")
        self._calls = [call for call in calls if call is not None]

    @staticmethod
    def supports(fn: Callable[..., Any]) -> bool:
        """Whether ``fn`` is hd95, assd or nsd, or a partial of one with keyword options only."""
        return _surface_call(fn) is not None

    def __len__(self) -> int:
        return len(self._calls)

    def __call__(self, outputs: Tensor, labels: Tensor, *, spacing: Spacing = None,
                 spatial_dims: int | None = None) -> list[float]:
        """Every metric's value (one number each: a reduction other than ``"none"``, or one scored pair)."""
        groups: dict[str, list[int]] = {}
        layouts: dict[str, dict[str, Any]] = {}
        for i, (_, options) in enumerate(self._calls):
            layout = {
                "spacing": options["spacing"] if spacing is None else spacing,
                "spatial_dims": options["spatial_dims"] if spatial_dims is None else spatial_dims,
                "num_classes": options["num_classes"],
                "include_background": options["include_background"],
            }
            groups.setdefault(repr(layout), []).append(i)
            layouts[repr(layout)] = layout
        values = [math.nan] * len(self._calls)
        for key, members in groups.items():

            def build(columns: int, members: list[int] = members) -> dict[str, Measure]:
                return {str(i): _measure(*self._calls[i], columns) for i in members}

            tables = _evaluate(outputs, labels, build, reduction="none", **layouts[key])
            for i in members:
                value = reduce_values(tables[str(i)], self._calls[i][1]["reduction"])
                if value.numel() != 1:
                    raise ValueError(f"a metric with reduction='none' scored {value.numel()} (case, class) pairs of "
                                     f"shape {tuple(outputs.shape)}; SharedSurfaceMetrics returns one number each")
                values[i] = float(value)
        return values
