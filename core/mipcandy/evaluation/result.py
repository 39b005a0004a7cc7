"""Evaluation results: per-case and per-class values, NaN-aware aggregates, CSV/JSON export and rich tables.

Values are stored as a ``(cases, metrics, classes)`` float64 array. A value is whatever the metric returned
for that (case, class), so empty classes follow the metric's own ``if_empty`` rule (for the built-in metrics:
a class absent from both sides scores 1 for Dice/IoU/NSD and 0 for HD95/ASSD; absent from one side only, 0
for Dice/IoU/NSD and infinity for HD95/ASSD). NaN (e.g. from ``if_empty=float("nan")``) means "not
scored" and is skipped by every aggregate; infinity is a real value and makes means infinite (the median
stays finite while fewer than half of the values are infinite).

Two means, as in nnU-Net's ``summary.json``: the *per-case mean* of a case is the mean over its classes
(foreground only unless the background was asked for); ``foreground_mean`` of a metric is the mean over
classes of the per-class means over cases. They agree unless some values are NaN.
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from mipcandy.atomic import atomic_write_text


@dataclass(frozen=True)
class Aggregate:
    """Statistics of one metric over cases; ``count`` values were not NaN, ``worst`` is (case, value), worst first.

    ``std`` is the population standard deviation (``numpy.nanstd`` with ``ddof=0``).
    """

    mean: float
    std: float
    median: float
    min: float
    max: float
    count: int
    worst: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class EvalCase:
    """One case: ``values[metric][class_id]``, the per-case mean over classes, and the files it came from."""

    case_id: str
    values: dict[str, dict[int, float]]
    mean: dict[str, float]
    prediction_file: Path | None = None
    reference_file: Path | None = None


def _quiet(function: Any, values: np.ndarray, **kwargs: Any) -> float:
    """A numpy NaN-aware reduction without the warnings of all-NaN or infinite input (the result says it)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(function(values, **kwargs))


def _json_number(value: float) -> float | str | None:
    """Strict JSON has no NaN or infinity: NaN (not scored) becomes null, infinity the string "inf"/"-inf"."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


class EvalResult(Sequence[EvalCase]):
    """Per-case, per-class values of several metrics, with aggregates and exports; a sequence of :class:`EvalCase`."""

    def __init__(
        self,
        case_ids: Sequence[str],
        metrics: Sequence[str],
        classes: Mapping[int, str],
        values: np.ndarray,
        *,
        lower_is_better: Sequence[str] = (),
        files: Sequence[tuple[Path | None, Path | None]] | None = None,
    ) -> None:
        self.case_ids = list(case_ids)
        self.metrics = list(metrics)
        self.classes = dict(classes)
        self.lower_is_better = frozenset(lower_is_better)
        expected = (len(self.case_ids), len(self.metrics), len(self.classes))
        if values.shape != expected:
            raise ValueError(f"values must have shape (cases, metrics, classes) = {expected}, got {values.shape}")
        self._values = np.asarray(values, dtype=np.float64)
        self._files = list(files) if files is not None else [(None, None)] * len(self.case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    @overload
    def __getitem__(self, i: int) -> EvalCase: ...

    @overload
    def __getitem__(self, i: slice) -> list[EvalCase]: ...

    def __getitem__(self, i: int | slice) -> EvalCase | list[EvalCase]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        row = self._values[i]
        values = {m: {c: float(row[k, j]) for j, c in enumerate(self.classes)} for k, m in enumerate(self.metrics)}
        mean = {m: float(self.case_means(m)[i]) for m in self.metrics}
        return EvalCase(self.case_ids[i], values, mean, *self._files[i])

    def __repr__(self) -> str:
        return f"EvalResult({len(self)} cases, metrics={self.metrics}, classes={list(self.classes)})"

    def _metric(self, metric: str) -> int:
        try:
            return self.metrics.index(metric)
        except ValueError:
            raise KeyError(f"metric {metric!r} was not evaluated; evaluated are {self.metrics}") from None

    def _class(self, class_id: int) -> int:
        try:
            return list(self.classes).index(class_id)
        except ValueError:
            raise KeyError(f"class {class_id} was not evaluated; evaluated are {list(self.classes)}") from None

    def table(self, metric: str) -> np.ndarray:
        """``(cases, classes)`` values of ``metric`` (a copy)."""
        return self._values[:, self._metric(metric)].copy()

    def values(self, metric: str, class_id: int | None = None) -> np.ndarray:
        """Per-case values of one class, or the per-case means over classes when ``class_id`` is None."""
        if class_id is None:
            return self.case_means(metric)
        return self._values[:, self._metric(metric), self._class(class_id)].copy()

    def case_means(self, metric: str) -> np.ndarray:
        """Per-case mean over the evaluated classes, skipping NaN (NaN when every class of a case is NaN)."""
        table = self.table(metric)
        return np.array([_quiet(np.nanmean, row) for row in table]) if len(table) else np.zeros(0)

    def class_means(self, metric: str) -> dict[int, float]:
        """Per-class mean over cases, skipping NaN (nnU-Net's ``mean``)."""
        table = self.table(metric)
        return {c: _quiet(np.nanmean, table[:, j]) for j, c in enumerate(self.classes)}

    def foreground_mean(self, metric: str) -> float:
        """Mean over classes of the per-class means, skipping NaN (nnU-Net's ``foreground_mean``)."""
        return _quiet(np.nanmean, np.array(list(self.class_means(metric).values())))

    def worst(self, metric: str, n: int = 5, class_id: int | None = None) -> list[tuple[str, float]]:
        """The ``n`` worst (case, value) pairs, worst first; NaN values are skipped, ties keep case order.

        Worst means lowest, or highest for metrics where lower is better (HD95, ASSD).
        """
        values = self.values(metric, class_id)
        keep = np.flatnonzero(~np.isnan(values))
        key = values[keep] if metric not in self.lower_is_better else -values[keep]
        order = keep[np.argsort(key, kind="stable")][: max(n, 0)]
        return [(self.case_ids[i], float(values[i])) for i in order]

    def aggregate(self, metric: str, class_id: int | None = None, *, worst_n: int = 5) -> Aggregate:
        """Mean, std, median, min, max and worst cases over the per-case values (see :meth:`values`)."""
        values = self.values(metric, class_id)
        return Aggregate(
            mean=_quiet(np.nanmean, values),
            std=_quiet(np.nanstd, values),
            median=_quiet(np.nanmedian, values),
            min=_quiet(np.nanmin, values) if len(values) else math.nan,
            max=_quiet(np.nanmax, values) if len(values) else math.nan,
            count=int(np.count_nonzero(~np.isnan(values))),
            worst=tuple(self.worst(metric, worst_n, class_id)),
        )

    def to_dict(self, *, worst_n: int = 5) -> dict[str, Any]:
        """A JSON-ready summary in the spirit of nnU-Net's ``summary.json`` (NaN as null, infinity as "inf").

        Keys: ``metrics`` (name -> which end is better), ``classes`` (id -> name), ``metric_per_case`` (per case:
        files, ``metrics[class_id][metric]`` and the per-case ``mean``), ``mean`` (per class, over cases),
        ``foreground_mean`` (per metric, over classes) and ``aggregate`` (per metric, over per-case means: mean,
        std, median, min, max, count, worst cases).
        """
        per_case = []
        for case in self:
            per_case.append({
                "case": case.case_id,
                "prediction_file": None if case.prediction_file is None else str(case.prediction_file),
                "reference_file": None if case.reference_file is None else str(case.reference_file),
                "metrics": {str(c): {m: _json_number(case.values[m][c]) for m in self.metrics} for c in self.classes},
                "mean": {m: _json_number(case.mean[m]) for m in self.metrics},
            })
        class_means = {m: self.class_means(m) for m in self.metrics}
        aggregates = {}
        for m in self.metrics:
            stats = self.aggregate(m, worst_n=worst_n)
            aggregates[m] = {
                **{key: _json_number(getattr(stats, key)) for key in ("mean", "std", "median", "min", "max")},
                "count": stats.count,
                "worst": [{"case": case, "value": _json_number(value)} for case, value in stats.worst],
            }
        return {
            "metrics": {m: {"higher_is_better": m not in self.lower_is_better} for m in self.metrics},
            "classes": {str(c): name for c, name in self.classes.items()},
            "metric_per_case": per_case,
            "mean": {str(c): {m: _json_number(class_means[m][c]) for m in self.metrics} for c in self.classes},
            "foreground_mean": {m: _json_number(self.foreground_mean(m)) for m in self.metrics},
            "aggregate": aggregates,
        }

    def save_json(self, path: str | Path, *, worst_n: int = 5) -> None:
        """Write :meth:`to_dict` as strict JSON, atomically."""
        text = json.dumps(self.to_dict(worst_n=worst_n), indent=2, allow_nan=False)
        atomic_write_text(path, text + "\n")

    def to_csv(self) -> str:
        """One row per (case, class) plus one per case with class ``mean`` (the per-case mean); floats as repr."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "class", "class_name", *self.metrics])
        for case in self:
            for c, name in self.classes.items():
                writer.writerow([case.case_id, c, name, *(repr(case.values[m][c]) for m in self.metrics)])
            writer.writerow([case.case_id, "mean", "mean over classes", *(repr(case.mean[m]) for m in self.metrics)])
        return buffer.getvalue()

    def save_csv(self, path: str | Path) -> None:
        """Write :meth:`to_csv`, atomically."""
        atomic_write_text(path, self.to_csv())

    def case_table(self) -> Any:
        """A rich table of per-case means per metric; the worst case of the first metric is highlighted."""
        from rich.table import Table

        first = self.metrics[0] if self.metrics else None
        worst = self.worst(first, 1) if first is not None else []
        worst_case = worst[0][0] if worst else None
        caption = f"worst case by {first}: {worst_case}" if worst_case is not None else None
        table = Table(title=f"{len(self)} cases (mean over classes)", title_justify="left", caption=caption)
        table.add_column("case")
        for m in self.metrics:
            table.add_column(m, justify="right")
        means = {m: self.case_means(m) for m in self.metrics}
        for i, case_id in enumerate(self.case_ids):
            table.add_row(case_id, *(f"{means[m][i]:.4f}" for m in self.metrics),
                          style="bold red" if case_id == worst_case else None)
        table.add_section()
        for label in ("mean", "std", "median"):
            stats = [self.aggregate(m, worst_n=0) for m in self.metrics]
            table.add_row(label, *(f"{getattr(s, label):.4f}" for s in stats), style="bold")
        return table

    def class_table(self) -> Any:
        """A rich table of per-class means over cases, with nnU-Net's foreground mean."""
        from rich.table import Table

        table = Table(title="Per-class mean over cases", title_justify="left")
        table.add_column("class")
        table.add_column("name")
        for m in self.metrics:
            table.add_column(m, justify="right")
        class_means = {m: self.class_means(m) for m in self.metrics}
        for c, name in self.classes.items():
            table.add_row(str(c), name, *(f"{class_means[m][c]:.4f}" for m in self.metrics))
        table.add_section()
        table.add_row("", "foreground mean", *(f"{self.foreground_mean(m):.4f}" for m in self.metrics), style="bold")
        return table

    def __iter__(self) -> Iterator[EvalCase]:
        return (self[i] for i in range(len(self)))
