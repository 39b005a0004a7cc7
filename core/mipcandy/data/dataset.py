"""Case datasets: torch ``Dataset`` views over a reader, indexed by sorted case ids.

A dataset is a sorted list of case ids plus a *reader* that loads one case by id (see :class:`CaseReader`).
Subsets, folds and device moves are cheap copies that share the reader; composition (binarizing labels,
concatenating datasets) wraps readers instead of subclassing formats. New storage formats (a preprocessed cache,
tensors in memory) only need a reader.
"""
from __future__ import annotations

import copy
import operator
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor
from torch.utils.data import Dataset

from mipcandy.data.folds import Fold, select_fold
from mipcandy.data.geometry import Geometry

Device = str | torch.device
D = TypeVar("D", bound="CaseDataset")


class DatasetError(ValueError):
    """Problems found in a dataset; each line names the case (and file), what is wrong and how to fix it."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{listing}")


@dataclass(frozen=True)
class DatasetDescription:
    """What a dataset says about its cases, for the experiment record: its name (which names experiment folders),
    class and channel names, and for a preprocessing cache its folder and plan (a ``PreprocessingPlan``), which
    prediction must apply again."""

    name: str | None = None
    labels: Mapping[str, int] | None = None
    channel_names: Mapping[int, str] | None = None
    cache: str | None = None
    plan: Any = None


@runtime_checkable
class CaseSource(Protocol):
    """A dataset of named cases that describes itself (every :class:`CaseDataset`)."""

    @property
    def case_ids(self) -> list[str]:
        """The case ids, in index order."""
        ...

    def describe(self) -> DatasetDescription:
        """Class and channel names, and the preprocessing cache and plan where there is one."""
        ...


class CaseReader(Protocol):
    """Loads one case by id, on the CPU. ``read_label`` is only needed by supervised datasets."""

    def read_image(self, case_id: str) -> Tensor:
        """The (C, *spatial) float image."""
        ...

    def read_geometry(self, case_id: str) -> Geometry:
        """The image's geometry (should not need the voxels when the format allows)."""
        ...

    def read_label(self, case_id: str) -> Tensor:
        """The (1, *spatial) integer label map on the image's grid."""
        ...


class CaseDataset(Dataset):
    """Common base: sorted case ids, a shared reader, a target device, subsets, folds and validation."""

    def __init__(self, reader: CaseReader, case_ids: Iterable[str], *, device: Device = "cpu") -> None:
        ids = sorted(case_ids)
        duplicates = sorted(c for c, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise ValueError(f"Case ids must be unique; duplicated: {duplicates}")
        self._reader = reader
        self._case_ids = ids
        self._device = torch.device(device)

    @property
    def reader(self) -> CaseReader:
        """The reader this dataset (and all its subsets) loads cases with."""
        return self._reader

    @property
    def case_ids(self) -> list[str]:
        """Sorted case ids (a copy)."""
        return list(self._case_ids)

    @property
    def device(self) -> torch.device:
        """Where ``__getitem__`` puts tensors."""
        return self._device

    def __len__(self) -> int:
        return len(self._case_ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} cases, device={self._device})"

    def describe(self) -> DatasetDescription:
        """Nothing beyond the cases by default; datasets read from a format that names classes say more."""
        return DatasetDescription()

    def case_id(self, i: int) -> str:
        """Case id of item ``i``."""
        i = operator.index(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"Index {i} is out of range for {self!r}")
        return self._case_ids[i]

    def index(self, case_id: str) -> int:
        """Item index of ``case_id``."""
        try:
            return self._case_ids.index(case_id)
        except ValueError:
            raise KeyError(f"Case {case_id!r} is not in {self!r}") from None

    def geometry(self, i: int) -> Geometry:
        """Geometry of case ``i`` (spacing, origin, direction), to write predictions back aligned."""
        return self._reader.read_geometry(self.case_id(i))

    def image(self, i: int) -> Tensor:
        """The (C, *spatial) image of case ``i`` on :attr:`device`."""
        return self._reader.read_image(self.case_id(i)).to(self._device)

    def to(self: D, device: Device) -> D:
        """A copy of this dataset that returns tensors on ``device``."""
        moved = copy.copy(self)
        moved._device = torch.device(device)
        return moved

    def subset(self: D, case_ids: Iterable[str]) -> D:
        """The same dataset restricted to ``case_ids`` (all must exist here)."""
        ids = list(case_ids)
        unknown = sorted(set(ids) - set(self._case_ids))
        if unknown:
            raise KeyError(f"Case(s) {unknown} are not in {self!r}")
        sub = copy.copy(self)
        CaseDataset.__init__(sub, self._reader, ids, device=self._device)
        return sub

    def fold(
        self: D,
        fold: Fold,
        *,
        num_folds: int = 5,
        seed: int = 12345,
        splits_file: str | os.PathLike[str] | None = None,
    ) -> tuple[D, D]:
        """(train, val) subsets of cross-validation ``fold``, split by case id as nnU-Net does.

        See :func:`mipcandy.data.folds.select_fold`: the default split equals nnU-Net's, ``splits_file`` is read
        (or created) in ``splits_final.json`` format, and ``"all"`` trains and validates on every case.
        """
        train, val = select_fold(self._case_ids, fold, num_folds=num_folds, seed=seed, splits_file=splits_file)
        return self.subset(train), self.subset(val)

    def case_problems(self, case_id: str) -> list[str]:
        """Everything wrong with one case, as messages naming it (loading it fully)."""
        return _problems_of(lambda: self._reader.read_image(case_id), case_id)

    def validate(self, *, console: Console | None = None, progress: bool = True) -> None:
        """Load every case and raise one :class:`DatasetError` listing all problems of all cases."""
        problems: list[str] = []
        with Progress(console=console, transient=True, disable=not progress) as bar:
            for case_id in bar.track(self._case_ids, description=f"Validating {len(self)} cases"):
                problems.extend(self.case_problems(case_id))
        if problems:
            raise DatasetError(repr(self), problems)


def _problems_of(load: Callable[[], object], case_id: str) -> list[str]:
    """Run ``load`` and turn its failure into problem messages that name ``case_id``."""
    try:
        load()
    except DatasetError as err:
        return err.problems
    except Exception as err:  # validation reports every failure instead of stopping at the first
        return [f"case {case_id!r}: {type(err).__name__}: {err}"]
    return []


class UnsupervisedDataset(CaseDataset):
    """Images without labels (e.g. nnU-Net's imagesTs); items are (C, *spatial) images."""

    def __getitem__(self, i: int) -> Tensor:
        return self.image(i)


class SupervisedDataset(CaseDataset):
    """Images with label maps; items are ``(image, label)`` with the label as (1, *spatial) int64."""

    def label(self, i: int) -> Tensor:
        """The (1, *spatial) int64 label map of case ``i`` on :attr:`device`."""
        return self._reader.read_label(self.case_id(i)).to(self._device)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.image(i), self.label(i)

    def case_problems(self, case_id: str) -> list[str]:
        """Image and label problems of one case."""
        return super().case_problems(case_id) + _problems_of(lambda: self._reader.read_label(case_id), case_id)


class MemoryReader:
    """Cases held as tensors, e.g. generated data or predictions: ``{case_id: (image, label | None, geometry)}``."""

    def __init__(self, cases: Mapping[str, tuple[Tensor, Tensor | None, Geometry]]) -> None:
        self._cases = dict(cases)

    def _case(self, case_id: str) -> tuple[Tensor, Tensor | None, Geometry]:
        try:
            return self._cases[case_id]
        except KeyError:
            raise KeyError(f"Case {case_id!r} is not held in memory") from None

    def read_image(self, case_id: str) -> Tensor:
        """The stored image."""
        return self._case(case_id)[0]

    def read_geometry(self, case_id: str) -> Geometry:
        """The stored geometry."""
        return self._case(case_id)[2]

    def read_label(self, case_id: str) -> Tensor:
        """The stored label (an error for image-only cases)."""
        label = self._case(case_id)[1]
        if label is None:
            raise KeyError(f"Case {case_id!r} has no label")
        return label


def dataset_from_tensors(
    cases: Mapping[str, tuple[Tensor, Tensor, Geometry]], *, device: Device = "cpu"
) -> SupervisedDataset:
    """A supervised dataset over in-memory ``{case_id: (image, label, geometry)}``."""
    return SupervisedDataset(MemoryReader(cases), cases, device=device)


class _BinarizedReader:
    """Maps the label ids in ``positive`` to 1 and everything else to 0."""

    def __init__(self, base: CaseReader, positive: Tensor) -> None:
        self._base = base
        self._positive = positive

    def read_image(self, case_id: str) -> Tensor:
        return self._base.read_image(case_id)

    def read_geometry(self, case_id: str) -> Geometry:
        return self._base.read_geometry(case_id)

    def read_label(self, case_id: str) -> Tensor:
        return torch.isin(self._base.read_label(case_id), self._positive).long()


class BinarizedDataset(SupervisedDataset):
    """A two-class view of ``base``: label ids in ``positive_ids`` become foreground (1), all others background."""

    def __init__(self, base: SupervisedDataset, positive_ids: Collection[int]) -> None:
        ids = sorted({int(i) for i in positive_ids})
        if not ids:
            raise ValueError("BinarizedDataset needs at least one positive label id")
        super().__init__(_BinarizedReader(base.reader, torch.tensor(ids)), base.case_ids, device=base.device)
        self.positive_ids = ids


class _MergedReader:
    """Routes each merged case id to the reader and original id it came from."""

    def __init__(self, routes: Mapping[str, tuple[CaseReader, str]]) -> None:
        self._routes = dict(routes)

    def read_image(self, case_id: str) -> Tensor:
        reader, original = self._routes[case_id]
        return reader.read_image(original)

    def read_geometry(self, case_id: str) -> Geometry:
        reader, original = self._routes[case_id]
        return reader.read_geometry(original)

    def read_label(self, case_id: str) -> Tensor:
        reader, original = self._routes[case_id]
        return reader.read_label(original)


class MergedDataset(SupervisedDataset):
    """Several supervised datasets as one; case ids must stay unique, so give ``prefixes`` when they clash.

    With ``prefixes``, case ``c`` of dataset ``k`` becomes ``prefixes[k] + c``. The device is the first dataset's
    unless ``device`` is given.
    """

    def __init__(
        self,
        datasets: Sequence[SupervisedDataset],
        *,
        prefixes: Sequence[str] | None = None,
        device: Device | None = None,
    ) -> None:
        if not datasets:
            raise ValueError("MergedDataset needs at least one dataset")
        if prefixes is not None and len(prefixes) != len(datasets):
            raise ValueError(f"Got {len(prefixes)} prefixes for {len(datasets)} datasets; give one per dataset")
        routes: dict[str, tuple[CaseReader, str]] = {}
        clashes: list[str] = []
        for k, dataset in enumerate(datasets):
            for case_id in dataset.case_ids:
                merged_id = (prefixes[k] if prefixes is not None else "") + case_id
                if merged_id in routes:
                    clashes.append(merged_id)
                routes[merged_id] = (dataset.reader, case_id)
        if clashes:
            raise ValueError(
                f"Merged case ids clash: {sorted(set(clashes))[:10]}; pass distinct prefixes=[...] (one per dataset)"
            )
        super().__init__(_MergedReader(routes), routes, device=datasets[0].device if device is None else device)
