"""The Evaluator: any metric functions, scored per (case, class) on folders, tensors or datasets.

A metric is called once per (case, class) as ``fn(prediction_mask, reference_mask, **extra)`` on two bool
``(*spatial)`` masks, where ``extra`` holds ``spacing`` (the reference's voxel size, tensor axis order) and
``spatial_dims`` for the functions that accept them; it returns one number (a float or a one-element tensor).
The built-in metrics (:mod:`mipcandy.metrics`) plug in as they are; fix their options with
``functools.partial`` (e.g. ``partial(nsd, tolerance=2.0)``). Empty classes score what the metric returns
for empty masks (its ``if_empty`` rule; see :mod:`mipcandy.evaluation.result` for how aggregates treat NaN
and infinity).

Classes are the explicit ``classes=`` (ids, or a name -> id mapping such as dataset.json's ``labels``), or
else every label value found in any prediction or reference of the evaluated set; a class absent from a case
is scored on empty masks. The background (id 0) is left out unless ``include_background=True``.

The surface metrics (``hd95``, ``assd``, ``nsd``, also as partials) share one distance computation per (case,
class) through :class:`~mipcandy.metrics.SharedSurfaceMetrics`, with the same values as separate calls.
``workers`` scores several cases at once in threads (loading, torch and SimpleITK release the GIL), each with
single-threaded torch and SimpleITK; results are identical to the serial path and in case order. Custom metric
functions must then be thread-safe (the built-in ones are).
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor

from mipcandy.data.files import geometry_mismatch
from mipcandy.data.io import load_image
from mipcandy.evaluation.pairing import pair_folders
from mipcandy.evaluation.result import EvalResult
from mipcandy.metrics import SharedSurfaceMetrics, assd, dice_similarity_coefficient, hd95, iou, nsd

__all__ = ["EvalResult", "EvaluationError", "Evaluator", "Metric", "STANDARD_METRICS", "standard_metrics"]

PathLike = str | os.PathLike[str]
MetricFn = Callable[..., Any]
Spacing = tuple[float, ...]
# Loads one case: (prediction, reference, reference spacing or None for voxel units).
Loader = Callable[[], tuple[Tensor, Tensor, Spacing | None]]
# A scored case: values per class id, the ids present in its prediction and in its reference, and the reference grid
# (shape, spacing, device) for the classes it lacks.
Scored = tuple[dict[int, list[float]], tuple[set[int], set[int]], tuple[tuple[int, ...], Spacing | None, torch.device]]

_DISTANCES = (hd95, assd)
_EXTRAS = ("spacing", "spatial_dims")
STANDARD_METRICS: dict[str, MetricFn] = {
    "dice": dice_similarity_coefficient,
    "iou": iou,
    "hd95": hd95,
    "assd": assd,
    "nsd": nsd,
}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS reports it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch on ``count`` threads inside the block, restoring the caller's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class EvaluationError(ValueError):
    """A case that cannot be scored (shape or geometry mismatch, wrong dtype, bad metric output); names the case."""


def _unwrap(fn: MetricFn) -> MetricFn:
    while isinstance(fn, partial):
        fn = fn.func
    return fn


def _extras(fn: MetricFn) -> frozenset[str]:
    """Which of ``spacing`` and ``spatial_dims`` ``fn`` accepts (all of them with ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return frozenset(_EXTRAS)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters if p.name in _EXTRAS and p.kind in keyword)


@dataclass(frozen=True)
class Metric:
    """A metric function with the name it is reported under and the end of its range that is worst."""

    name: str
    fn: MetricFn
    higher_is_better: bool = True

    @classmethod
    def of(cls, metric: Metric | MetricFn | tuple[str, MetricFn]) -> Metric:
        """From a Metric, a ``(name, fn)`` pair or a named function (HD95 and ASSD: lower is better)."""
        if isinstance(metric, Metric):
            return metric
        name, fn = metric if isinstance(metric, tuple) else (getattr(_unwrap(metric), "__name__", None), metric)
        if not callable(fn):
            raise TypeError(f"metric {name!r} is not callable: {fn!r}")
        if not isinstance(name, str) or not name or name == "<lambda>":
            raise TypeError(f"cannot name the metric {fn!r}; pass it as a (name, fn) pair or a Metric")
        return cls(name, fn, _unwrap(fn) not in _DISTANCES)


def standard_metrics(names: Iterable[str], *, nsd_tolerance: float | None = None) -> list[Metric]:
    """The built-in metrics by name (``dice``, ``iou``, ``hd95``, ``assd``, ``nsd``); NSD needs a tolerance in mm."""
    metrics = []
    for name in names:
        if name not in STANDARD_METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(STANDARD_METRICS)}")
        fn = STANDARD_METRICS[name]
        if name == "nsd":
            if nsd_tolerance is None:
                raise ValueError("the nsd metric needs a tolerance in mm (nsd_tolerance=..., --nsd-tolerance MM)")
            fn = partial(nsd, tolerance=nsd_tolerance)
        metrics.append(Metric(name, fn, fn not in _DISTANCES))
    return metrics


def _label_map(tensor: Any, what: str, case_id: str) -> Tensor:
    """``tensor`` as a ``(1, *spatial)`` integer label map, or an error naming the case."""
    if not isinstance(tensor, Tensor):
        raise EvaluationError(f"case {case_id!r}: the {what} is a {type(tensor).__name__}, not a torch.Tensor")
    if tensor.is_floating_point() or tensor.is_complex():
        raise EvaluationError(
            f"case {case_id!r}: the {what} is {tensor.dtype}, but a label map of integer class ids is needed; "
            "turn logits or probabilities into labels first (e.g. logits.argmax(0, keepdim=True))"
        )
    if tensor.ndim not in (3, 4) or tensor.shape[0] != 1:
        raise EvaluationError(
            f"case {case_id!r}: the {what} has shape {tuple(tensor.shape)}; expected a label map (1, H, W) or "
            "(1, D, H, W) with one channel"
        )
    return tensor.long() if tensor.dtype == torch.bool else tensor


class Evaluator:
    """Scores segmentations with any metric functions, per case and per class (see the module docstring).

    ``geometry_tolerance`` bounds how far the prediction's spacing, origin and direction may differ from the
    reference's when reading files (relative above 1, absolute below, as for dataset grids). ``workers`` is how
    many cases are scored at once (threads), capped at the number of CPUs.
    """

    def __init__(
        self,
        *metrics: Metric | MetricFn | tuple[str, MetricFn],
        classes: Sequence[int] | Mapping[str, int] | None = None,
        include_background: bool = False,
        geometry_tolerance: float = 1e-4,
        console: Console | None = None,
        progress: bool = True,
        workers: int = 1,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number >= 1 (cases scored at once), got {workers!r}")
        if not metrics:
            raise ValueError("give at least one metric, e.g. Evaluator(dice_similarity_coefficient)")
        self.metrics = [Metric.of(m) for m in metrics]
        names = [m.name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique; duplicated: {duplicates}; name them with (name, fn)")
        self._extras = [_extras(m.fn) for m in self.metrics]
        self._shared = [i for i, m in enumerate(self.metrics) if SharedSurfaceMetrics.supports(m.fn)]
        self._surfaces = SharedSurfaceMetrics([self.metrics[i].fn for i in self._shared])
        self.workers = workers
        self.include_background = include_background
        self.class_names = self._resolve_classes(classes)
        self.geometry_tolerance = geometry_tolerance
        self.console = console
        self.progress = progress

    def _resolve_classes(self, classes: Sequence[int] | Mapping[str, int] | None) -> dict[int, str] | None:
        if classes is None:
            return None
        if isinstance(classes, Mapping):
            named = {int(i): str(name) for name, i in classes.items()}
        else:
            named = {int(i): str(int(i)) for i in classes}
        kept = {i: named[i] for i in sorted(named) if self.include_background or i != 0}
        if not kept or any(i < 0 for i in kept):
            raise ValueError(f"classes must hold non-negative ids besides the background (0), got {dict(named)}")
        return kept

    def _score_class(self, prediction: Tensor, reference: Tensor, spacing: Spacing | None, case_id: str,
                     class_id: int) -> list[float]:
        """Every metric on the masks of one class; the surface metrics from one distance computation."""
        dims = prediction.ndim
        scores = [0.0] * len(self.metrics)
        if self._shared:
            shared = self._surfaces(prediction, reference, spacing=spacing, spatial_dims=dims)
            for i, value in zip(self._shared, shared, strict=True):
                scores[i] = value
        for i, (metric, extras) in enumerate(zip(self.metrics, self._extras, strict=True)):
            if i in self._shared:
                continue
            kwargs: dict[str, Any] = {}
            if "spacing" in extras and spacing is not None:
                kwargs["spacing"] = spacing
            if "spatial_dims" in extras:
                kwargs["spatial_dims"] = dims
            value = metric.fn(prediction, reference, **kwargs)
            if isinstance(value, Tensor) and value.numel() != 1:
                raise EvaluationError(
                    f"case {case_id!r}, class {class_id}: metric {metric.name!r} returned {value.numel()} values for "
                    "one pair of masks; a metric must return one number (use its mean reduction)"
                )
            scores[i] = float(value)
        return scores

    def _score_case(self, case_id: str, load: Loader) -> Scored:
        """Load one case and score each class present in it (or each given class)."""
        prediction, reference, spacing = load()
        prediction = _label_map(prediction, "prediction", case_id)[0]
        reference = _label_map(reference, "reference", case_id)[0]
        if prediction.shape != reference.shape:
            raise EvaluationError(
                f"case {case_id!r}: the prediction has shape {tuple(prediction.shape)} but the reference "
                f"{tuple(reference.shape)}; predict on the reference's grid (resample back) before evaluating"
            )
        prediction = prediction.to(reference.device)
        present = _present_ids(prediction), _present_ids(reference)
        if self.class_names is not None:
            ids = list(self.class_names)
        else:
            ids = sorted(i for i in present[0] | present[1] if self.include_background or i != 0)
        scores = {c: self._score_class(prediction == c, reference == c, spacing, case_id, c) for c in ids}
        return scores, present, (tuple(reference.shape), spacing, reference.device)

    def _score_all(self, cases: Sequence[tuple[str, Loader]]) -> Iterator[Scored]:
        """Scored cases in case order: one at a time, or ``workers`` at once in threads."""
        workers = min(self.workers, available_cpus(), len(cases))
        if workers <= 1:
            yield from (self._score_case(case_id, load) for case_id, load in cases)
            return
        # One torch thread per case (SimpleITK follows it in the surface metrics): cases are the parallel unit.
        with _torch_threads(1):
            pool = ThreadPoolExecutor(workers, thread_name_prefix="mipcandy-evaluate")
            try:
                yield from pool.map(lambda case: self._score_case(*case), cases)
            finally:
                pool.shutdown(cancel_futures=True)

    def _run(self, cases: Sequence[tuple[str, Loader]], files: Sequence[tuple[Path | None, Path | None]] | None = None
             ) -> EvalResult:
        """Load and score every case (one pass), then fill classes a case lacks with their empty-mask values."""
        scored: list[Scored] = []
        with Progress(console=self.console, transient=True, disable=not self.progress) as bar:
            scored.extend(bar.track(self._score_all(cases), total=len(cases),
                                    description=f"Evaluating {len(cases)} cases"))
        found = sorted({c for case_scores, _, _ in scored for c in case_scores})
        class_names = self.class_names if self.class_names is not None else {c: str(c) for c in found}
        values = np.empty((len(cases), len(self.metrics), len(class_names)))
        presence = np.zeros((len(cases), len(class_names), 2), dtype=bool)
        for i, ((case_id, _), (case_scores, present, (shape, spacing, device))) in enumerate(
                zip(cases, scored, strict=True)):
            for j, c in enumerate(class_names):
                presence[i, j] = c in present[0], c in present[1]
                if c not in case_scores:
                    empty = torch.zeros(shape, dtype=torch.bool, device=device)
                    case_scores[c] = self._score_class(empty, empty, spacing, case_id, c)
                values[i, :, j] = case_scores[c]
        lower = [m.name for m in self.metrics if not m.higher_is_better]
        return EvalResult([c for c, _ in cases], [m.name for m in self.metrics], class_names, values,
                          lower_is_better=lower, files=files, presence=presence)

    def evaluate(
        self,
        predictions: Sequence[Tensor],
        labels: Sequence[Tensor],
        *,
        spacing: Sequence[float] | Sequence[Sequence[float]] | None = None,
        case_ids: Sequence[str] | None = None,
    ) -> EvalResult:
        """Score ``(1, *spatial)`` label-map tensors pairwise.

        ``spacing`` is one spacing for all cases, one per case, or None (distances in voxels); tensor axis order.
        Case ids default to ``"0"``, ``"1"``, ...
        """
        if len(predictions) != len(labels):
            raise ValueError(f"got {len(predictions)} predictions for {len(labels)} labels; give one per label")
        ids = [str(i) for i in range(len(labels))] if case_ids is None else [str(c) for c in case_ids]
        if len(ids) != len(labels) or len(set(ids)) != len(ids):
            raise ValueError(f"case_ids must be {len(labels)} unique names, got {list(ids)}")
        if spacing is None or (len(spacing) and isinstance(spacing[0], int | float)):
            spacings: list[Spacing | None] = [None if spacing is None else tuple(map(float, spacing))] * len(ids)
        else:
            spacings = [tuple(map(float, s)) for s in spacing]  # type: ignore[arg-type]
            if len(spacings) != len(ids):
                raise ValueError(f"got {len(spacings)} spacings for {len(ids)} cases; give one, or one per case")
        return self._run([(case_id, partial(_given, predictions[i], labels[i], spacings[i]))
                          for i, case_id in enumerate(ids)])

    def evaluate_folders(self, predictions: PathLike, labels: PathLike) -> EvalResult:
        """Score the prediction files of one folder against the reference files of another, paired by case name.

        The spacing of each case is read from its reference file; the prediction must lie on the same grid.
        """
        pairs = pair_folders(predictions, labels)
        cases = [(case_id, partial(self._load_pair, case_id, p, r)) for case_id, p, r in pairs]
        return self._run(cases, files=[(p, r) for _, p, r in pairs])

    def _load_pair(self, case_id: str, prediction_file: Path, reference_file: Path) -> tuple[Tensor, Tensor, Spacing]:
        prediction, predicted_grid = load_image(prediction_file, is_label=True)
        reference, reference_grid = load_image(reference_file, is_label=True)
        differences = geometry_mismatch(prediction.shape[1:], predicted_grid, reference.shape[1:], reference_grid,
                                        tolerance=self.geometry_tolerance)
        if differences:
            raise EvaluationError(
                f"case {case_id!r}: prediction {prediction_file} is not on the grid of reference {reference_file} "
                f"({'; '.join(differences)}); resample the prediction onto the reference (nearest neighbour)"
            )
        return prediction, reference, reference_grid.spacing

    def evaluate_dataset(self, dataset: Any, predictions: Mapping[str, Tensor] | Sequence[Tensor]) -> EvalResult:
        """Score predictions against a supervised dataset's labels, with the spacing of its geometry.

        ``predictions`` maps each case id of the dataset to its label map, or lists them in case order.
        """
        ids = dataset.case_ids
        if isinstance(predictions, Mapping):
            missing = sorted(set(ids) - set(predictions))
            extra = sorted(set(predictions) - set(ids))
            if missing or extra:
                raise EvaluationError(
                    f"predictions do not match the cases of {dataset!r}: missing {missing or 'none'}, "
                    f"extra {extra or 'none'}; give one prediction per case id"
                )
            ordered = [predictions[c] for c in ids]
        else:
            if len(predictions) != len(ids):
                raise EvaluationError(f"got {len(predictions)} predictions for the {len(ids)} cases of {dataset!r}")
            ordered = list(predictions)
        return self._run([(c, partial(_dataset_case, dataset, i, ordered.__getitem__)) for i, c in enumerate(ids)])

    def predict_and_evaluate(self, predictor: Any, dataset: Any) -> EvalResult:
        """Predict every case of a supervised dataset and score it, one case in memory at a time.

        ``predictor`` is a :class:`~mipcandy.inference.predictor.Predictor` (its ``predict_case(image, geometry,
        case_id=...)`` is used, so planned resampling sees the case's geometry), any object with a
        ``predict(image)`` method, or a callable ``image -> label map``. It gets the ``(C, *spatial)`` image and
        may return a ``(1, *spatial)`` or ``(*spatial)`` label map, or a prediction with a ``labels`` tensor
        (also as a one-item iterator). It runs under ``torch.inference_mode()``.
        """
        if hasattr(predictor, "predict_case"):
            def predict(i: int, image: Tensor) -> Any:
                return predictor.predict_case(image, dataset.geometry(i), case_id=dataset.case_id(i))
        else:
            method = getattr(predictor, "predict", predictor)
            if not callable(method):
                raise TypeError(f"{predictor!r} has no predict(image) method and is not callable")

            def predict(i: int, image: Tensor) -> Any:
                return method(image)

        def run(i: int) -> Tensor:
            image = dataset.image(i)
            with torch.inference_mode():
                output = _as_labels(predict(i, image), dataset.case_id(i))
            return output[None] if isinstance(output, Tensor) and output.ndim == image.ndim - 1 else output

        return self._run([(c, partial(_dataset_case, dataset, i, run)) for i, c in enumerate(dataset.case_ids)])


def _present_ids(label_map: Tensor) -> set[int]:
    """The label values present in a map; counting is far cheaper than ``torch.unique``'s sort."""
    low, high = int(label_map.min()), int(label_map.max())
    if low < 0 or high >= 1 << 16:
        return set(label_map.unique().tolist())
    return set(torch.bincount(label_map.reshape(-1), minlength=high + 1).nonzero()[:, 0].tolist())


def _as_labels(output: Any, case_id: str) -> Any:
    """The label map in a predictor's output: a tensor, a prediction's ``labels``, or the one item of an iterator."""
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "labels"):
        return output.labels
    if isinstance(output, Iterable):
        items = list(output)
        if len(items) != 1:
            raise EvaluationError(f"case {case_id!r}: the predictor returned {len(items)} predictions for one image")
        return _as_labels(items[0], case_id)
    return output


def _given(prediction: Tensor, reference: Tensor, spacing: Spacing | None) -> tuple[Tensor, Tensor, Spacing | None]:
    """A loader for tensors already in memory."""
    return prediction, reference, spacing


def _dataset_case(dataset: Any, i: int, prediction: Callable[[int], Tensor]) -> tuple[Tensor, Tensor, Spacing]:
    """Loads case ``i``: the prediction from ``prediction(i)``, the label and spacing from the dataset."""
    return prediction(i), dataset.label(i), dataset.geometry(i).spacing
