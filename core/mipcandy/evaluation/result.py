"""Evaluation results: per-case and per-class values, aggregates over defined values, CSV/JSON export, rich tables.

Values are stored as a ``(cases, metrics, classes)`` float64 array. A value is whatever the metric returned
for that (case, class), so empty classes follow the metric's own ``if_empty`` rule (for the built-in metrics:
a class absent from both sides scores 1 for Dice/IoU/NSD and 0 for HD95/ASSD; absent from one side only, 0
for Dice/IoU/NSD and infinity for HD95/ASSD). NaN (e.g. from ``if_empty=float("nan")``) means "not scored".

Aggregates (mean, std, median, min, max) are taken over the *defined* values, the finite ones, and report how
many values are not defined and why (:mod:`mipcandy.evaluation.undefined`): one infinite HD95 would otherwise
make the mean infinite and the standard deviation NaN. When the evaluator says which side of each (case, class)
holds the class (``presence``), the reason is "empty prediction", "empty reference" or "both empty"; otherwise
it is "infinite" or "NaN".

Two means, as in nnU-Net's ``summary.json``: the *per-case mean* of a case is the mean over its classes,
skipping NaN (foreground only unless the background was asked for; infinite, so undefined, when one class is
infinite); ``foreground_mean`` of a metric is the mean over classes of the per-class means over cases.
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from mipcandy.atomic import atomic_write_text
from mipcandy.evaluation.undefined import (
    BOTH_EMPTY,
    EMPTY_PREDICTION,
    EMPTY_REFERENCE,
    INFINITE,
    NOT_A_NUMBER,
    POLICY,
    REASONS,
)

_EMPTY_SIDE = {(False, True): EMPTY_PREDICTION, (True, False): EMPTY_REFERENCE, (False, False): BOTH_EMPTY}


@dataclass(frozen=True)
class Aggregate:
    """Statistics of one metric over the cases where it is defined (finite); ``count`` is how many those are.

    ``undefined`` is the number of other cases and ``reasons`` counts them by reason (a per-case mean over
    classes can have several). ``std`` is the population standard deviation (``ddof=0``). ``worst`` is
    (case, value), worst first; undefined values other than NaN are the worst.
    """

    mean: float
    std: float
    median: float
    min: float
    max: float
    count: int
    worst: tuple[tuple[str, float], ...]
    undefined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


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


def _defined_mean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _json_number(value: float) -> float | str | None:
    """Strict JSON has no NaN or infinity: NaN (not scored) becomes null, infinity the string "inf"/"-inf"."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _undefined_notes(stats: Mapping[str, Aggregate], prefix: str = "", of: str = "") -> list[str]:
    """Lines saying which metrics are undefined in how many cases and why, metrics with the same counts together."""
    groups: dict[str, list[str]] = {}
    for metric, s in stats.items():
        if s.undefined:
            why = next(iter(s.reasons)) if len(s.reasons) == 1 else ", ".join(f"{r} {n}" for r, n in s.reasons.items())
            groups.setdefault(f"{s.undefined}{of} case{'' if s.undefined == 1 and not of else 's'} ({why})",
                              []).append(metric)
    return [f"{prefix}{', '.join(metrics)} undefined in {text}" for text, metrics in groups.items()]


def _with_notes(table: Any, notes: list[str]) -> Any:
    """A table with notes printed below it at the console's width (a caption would wrap at the table's)."""
    from rich.console import Group
    from rich.text import Text

    return Group(table, Text("\n".join(notes))) if notes else table


class EvalResult(Sequence[EvalCase]):
    """Per-case, per-class values of several metrics, with aggregates and exports; a sequence of :class:`EvalCase`.

    ``presence`` (optional, ``(cases, classes, 2)`` bool) says whether the prediction and the reference of each
    (case, class) hold the class; it names why a value is undefined.
    """

    def __init__(
        self,
        case_ids: Sequence[str],
        metrics: Sequence[str],
        classes: Mapping[int, str],
        values: np.ndarray,
        *,
        lower_is_better: Sequence[str] = (),
        files: Sequence[tuple[Path | None, Path | None]] | None = None,
        presence: np.ndarray | None = None,
    ) -> None:
        self.case_ids = list(case_ids)
        self.metrics = list(metrics)
        self.classes = dict(classes)
        self.lower_is_better = frozenset(lower_is_better)
        expected = (len(self.case_ids), len(self.metrics), len(self.classes))
        if values.shape != expected:
            raise ValueError(f"values must have shape (cases, metrics, classes) = {expected}, got {values.shape}")
        if presence is not None and presence.shape != (expected[0], expected[2], 2):
            raise ValueError(f"presence must have shape (cases, classes, 2) = {(expected[0], expected[2], 2)}, got "
                             f"{presence.shape}")
        self._values = np.asarray(values, dtype=np.float64)
        self._presence = None if presence is None else np.asarray(presence, dtype=bool)
        self._files = list(files) if files is not None else [(None, None)] * len(self.case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    def with_class_names(self, names: Mapping[int, str]) -> EvalResult:
        """The same result with classes named by ``names`` (id -> name) where it names them."""
        classes = {c: names.get(c, name) for c, name in self.classes.items()}
        return EvalResult(self.case_ids, self.metrics, classes, self._values, lower_is_better=self.lower_is_better,
                          files=self._files, presence=self._presence)

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
        """Per-class mean over the cases where the class's value is defined (finite)."""
        table = self.table(metric)
        return {c: _defined_mean(table[:, j]) for j, c in enumerate(self.classes)}

    def foreground_mean(self, metric: str) -> float:
        """Mean over classes of the per-class means, skipping classes without a defined value."""
        return _quiet(np.nanmean, np.array(list(self.class_means(metric).values())))

    def empty_side(self, case: int, class_id: int) -> str | None:
        """Which side of (case index, class) lacks the class: a reason such as "empty prediction", or None when
        both hold it or when the evaluator did not record it."""
        if self._presence is None:
            return None
        return _EMPTY_SIDE.get(tuple(bool(v) for v in self._presence[case, self._class(class_id)]))

    def undefined_reasons(self, metric: str, case: int, class_id: int | None = None) -> list[str]:
        """Why the value of ``metric`` for case index ``case`` (one class, or its mean) is undefined; [] if defined.

        For the per-case mean these are the reasons of its classes that made it undefined.
        """
        row = self._values[case, self._metric(metric)]
        if class_id is not None:
            columns = [self._class(class_id)]
        else:
            mean = _quiet(np.nanmean, row)
            if math.isfinite(mean):
                return []
            columns = [j for j, v in enumerate(row) if math.isinf(v) or (math.isnan(mean) and math.isnan(v))]
        reasons = []
        for j in columns:
            value = row[j]
            if math.isfinite(value):
                continue
            side = self.empty_side(case, list(self.classes)[j])
            reason = side or (INFINITE if math.isinf(value) else NOT_A_NUMBER)
            if reason not in reasons:
                reasons.append(reason)
        return reasons

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
        """Mean, std, median, min and max over the cases where the value (see :meth:`values`) is defined, the
        count of the other cases and their reasons, and the worst cases."""
        values = self.values(metric, class_id)
        finite = values[np.isfinite(values)]
        reasons: Counter[str] = Counter()
        undefined = [i for i in range(len(values)) if not math.isfinite(values[i])]
        for i in undefined:
            reasons.update(self.undefined_reasons(metric, i, class_id))
        stats = (finite.mean(), finite.std(), np.median(finite), finite.min(), finite.max()) if finite.size else \
            (math.nan,) * 5
        return Aggregate(*(float(v) for v in stats), count=int(finite.size),
                         worst=tuple(self.worst(metric, worst_n, class_id)), undefined=len(undefined),
                         reasons={r: reasons[r] for r in REASONS if reasons[r]})

    def to_dict(self, *, worst_n: int = 5) -> dict[str, Any]:
        """A JSON-ready summary in the spirit of nnU-Net's ``summary.json`` (NaN as null, infinity as "inf").

        Keys: ``metrics`` (name -> which end is better), ``classes`` (id -> name), ``policy`` (how undefined
        values are treated), ``metric_per_case`` (per case: files, ``metrics[class_id][metric]``, the per-case
        ``mean`` and, where known, ``empty[class_id]``: which side lacks the class), ``mean`` (per class, over
        the cases where defined), ``undefined`` (per class and metric: reason -> cases, where any),
        ``foreground_mean`` (per metric, over classes) and ``aggregate`` (per metric, over per-case means: mean,
        std, median, min, max, count of defined cases, undefined cases and reasons, worst cases).
        """
        per_case = []
        for i, case in enumerate(self):
            entry: dict[str, Any] = {
                "case": case.case_id,
                "prediction_file": None if case.prediction_file is None else str(case.prediction_file),
                "reference_file": None if case.reference_file is None else str(case.reference_file),
                "metrics": {str(c): {m: _json_number(case.values[m][c]) for m in self.metrics} for c in self.classes},
                "mean": {m: _json_number(case.mean[m]) for m in self.metrics},
            }
            if self._presence is not None:
                entry["empty"] = {str(c): side for c in self.classes if (side := self.empty_side(i, c))}
            per_case.append(entry)
        class_means = {m: self.class_means(m) for m in self.metrics}
        undefined: dict[str, dict[str, dict[str, int]]] = {}
        for c in self.classes:
            for m in self.metrics:
                reasons = self.aggregate(m, c, worst_n=0).reasons
                if reasons:
                    undefined.setdefault(str(c), {})[m] = reasons
        aggregates = {}
        for m in self.metrics:
            stats = self.aggregate(m, worst_n=worst_n)
            aggregates[m] = {
                **{key: _json_number(getattr(stats, key)) for key in ("mean", "std", "median", "min", "max")},
                "count": stats.count,
                "undefined": stats.undefined,
                "reasons": stats.reasons,
                "worst": [{"case": case, "value": _json_number(value)} for case, value in stats.worst],
            }
        return {
            "metrics": {m: {"higher_is_better": m not in self.lower_is_better} for m in self.metrics},
            "classes": {str(c): name for c, name in self.classes.items()},
            "policy": POLICY,
            "metric_per_case": per_case,
            "mean": {str(c): {m: _json_number(class_means[m][c]) for m in self.metrics} for c in self.classes},
            "undefined": undefined,
            "foreground_mean": {m: _json_number(self.foreground_mean(m)) for m in self.metrics},
            "aggregate": aggregates,
        }

    def save_json(self, path: str | Path, *, worst_n: int = 5) -> None:
        """Write :meth:`to_dict` as strict JSON, atomically."""
        text = json.dumps(self.to_dict(worst_n=worst_n), indent=2, allow_nan=False)
        atomic_write_text(path, text + "\n")

    def to_csv(self) -> str:
        """One row per (case, class) plus one per case with class ``mean`` (the per-case mean); floats as repr.

        Summary rows follow, with an empty ``case``: per class and for the per-case means, the mean, std and
        median over the cases where defined, how many those are, and the undefined cases by reason.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "class", "class_name", *self.metrics])
        for case in self:
            for c, name in self.classes.items():
                writer.writerow([case.case_id, c, name, *(repr(case.values[m][c]) for m in self.metrics)])
            writer.writerow([case.case_id, "mean", "mean over classes", *(repr(case.mean[m]) for m in self.metrics)])
        groups: list[tuple[int | str, str, int | None]] = [(c, name, c) for c, name in self.classes.items()]
        for label, name, class_id in [*groups, ("mean", "mean over classes", None)]:
            stats = [self.aggregate(m, class_id, worst_n=0) for m in self.metrics]
            rows = {"mean over defined cases": [repr(s.mean) for s in stats], "std": [repr(s.std) for s in stats],
                    "median": [repr(s.median) for s in stats], "defined cases": [s.count for s in stats]}
            for reason in REASONS:
                if any(reason in s.reasons for s in stats):
                    rows[f"undefined: {reason}"] = [s.reasons.get(reason, 0) for s in stats]
            for statistic, cells in rows.items():
                writer.writerow(["", label, f"{name}: {statistic}", *cells])
        return buffer.getvalue()

    def save_csv(self, path: str | Path) -> None:
        """Write :meth:`to_csv`, atomically."""
        atomic_write_text(path, self.to_csv())

    def _cell(self, metric: str, case: int, value: float) -> str:
        """A per-case mean for a table: the number, or why it is undefined."""
        if math.isfinite(value):
            return f"{value:.4f}"
        reasons = self.undefined_reasons(metric, case)
        return reasons[0] if len(reasons) == 1 else "undefined"

    def case_table(self) -> Any:
        """A rich table of per-case means per metric, with mean, std and median over the cases where each metric is
        defined and the count of the others; the worst case of the first metric is highlighted and named below,
        with the reasons of undefined values."""
        from rich.table import Table

        first = self.metrics[0] if self.metrics else None
        worst = self.worst(first, 1) if first is not None else []
        worst_case = worst[0][0] if worst else None
        stats = [self.aggregate(m, worst_n=0) for m in self.metrics]
        notes = [f"worst case by {first}: {worst_case}"] if worst_case is not None else []
        undefined = _undefined_notes(dict(zip(self.metrics, stats, strict=True)), of=f" of {len(self)}")
        if undefined:
            notes += [*undefined, "undefined values are left out of mean, std and median"]
        table = Table(title=f"{len(self)} cases (mean over classes)", title_justify="left")
        table.add_column("case")
        for m in self.metrics:
            table.add_column(m, justify="right")
        means = {m: self.case_means(m) for m in self.metrics}
        for i, case_id in enumerate(self.case_ids):
            table.add_row(case_id, *(self._cell(m, i, means[m][i]) for m in self.metrics),
                          style="bold red" if case_id == worst_case else None)
        table.add_section()
        for label in ("mean", "std", "median"):
            table.add_row(label, *(f"{getattr(s, label):.4f}" for s in stats), style="bold")
        if any(s.undefined for s in stats):
            table.add_row("undefined", *(str(s.undefined) for s in stats), style="bold")
        return _with_notes(table, notes)

    def class_table(self) -> Any:
        """A rich table of per-class means over the cases where defined (with the count of the others, whose
        reasons are given below it), and nnU-Net's foreground mean."""
        from rich.table import Table

        rows, notes = [], []
        for c, name in self.classes.items():
            stats = [self.aggregate(m, c, worst_n=0) for m in self.metrics]
            rows.append((str(c), name, *(f"{s.mean:.4f}" + (f" ({s.undefined} undefined)" if s.undefined else "")
                                         for s in stats)))
            notes += _undefined_notes(dict(zip(self.metrics, stats, strict=True)), prefix=f"{name}: ")
        if notes:
            notes.append("undefined values are left out of the means")
        table = Table(title="Per-class mean over cases", title_justify="left")
        table.add_column("class")
        table.add_column("name")
        for m in self.metrics:
            table.add_column(m, justify="right")
        for row in rows:
            table.add_row(*row)
        table.add_section()
        table.add_row("", "foreground mean", *(f"{self.foreground_mean(m):.4f}" for m in self.metrics), style="bold")
        return _with_notes(table, notes)

    def __iter__(self) -> Iterator[EvalCase]:
        return (self[i] for i in range(len(self)))
