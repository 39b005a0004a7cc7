"""Cases stored as image files: one file per channel plus an optional label file, checked as they are read."""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mipcandy.data.dataset import DatasetError
from mipcandy.data.geometry import Geometry
from mipcandy.data.io import load_image

_Header = tuple[tuple[int, ...], Geometry]


def _load(case_id: str, path: Path, *, is_label: bool = False) -> tuple[Tensor, Geometry]:
    """:func:`load_image`, its refusals (corrupt file, NaN intensities, ...) as a DatasetError naming the case."""
    try:
        return load_image(path, is_label=is_label)
    except (OSError, ValueError) as err:
        raise DatasetError(f"case {case_id!r}", [f"case {case_id!r}: {err}"]) from err


def show_path(path: Path) -> str:
    """A file named by its folder and name, enough to find it inside a dataset."""
    return f"{path.parent.name}/{path.name}"


def geometry_mismatch(
    shape: Sequence[int], geometry: Geometry, ref_shape: Sequence[int], ref: Geometry, *, tolerance: float
) -> list[str]:
    """What differs between two grids: the shape exactly, spacing/origin/direction beyond ``tolerance``.

    The tolerance is relative for values above 1 in magnitude and absolute below, which absorbs the float32
    rounding of NIfTI headers.
    """
    if tuple(shape) != tuple(ref_shape):
        return [f"shape {tuple(shape)} != {tuple(ref_shape)}"]
    fields = {"spacing": (geometry.spacing, ref.spacing), "origin": (geometry.origin, ref.origin),
              "direction": (geometry.direction, ref.direction)}
    return [
        f"{name} {tuple(round(v, 6) for v in ours)} != {tuple(round(v, 6) for v in theirs)}"
        for name, (ours, theirs) in fields.items()
        if len(ours) != len(theirs)
        or not all(math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance) for a, b in zip(ours, theirs, strict=True))
    ]


class FileReader:
    """Reads case ``c`` from ``images[c]`` (channel files, stacked in order) and ``labels[c]``.

    Each read checks that channels share one grid, that the label lies on the image grid and (with
    ``label_values``) holds only declared ids; failures, and files :func:`load_image` refuses (truncated, not an
    image, NaN or infinite intensities), raise :class:`DatasetError` naming the case and file.
    ``label_values_origin`` says where the declared ids come from, for the error message.
    """

    def __init__(
        self,
        images: Mapping[str, Sequence[Path]],
        labels: Mapping[str, Path] | None = None,
        *,
        label_values: Collection[int] | None = None,
        label_values_origin: str = "the declared labels",
        tolerance: float = 1e-4,
    ) -> None:
        self._images = {case: [Path(p) for p in paths] for case, paths in images.items()}
        self._labels = {case: Path(p) for case, p in (labels or {}).items()}
        declared = None if label_values is None else sorted(int(v) for v in label_values)
        self._label_values = None if declared is None else torch.tensor(declared, dtype=torch.int64)
        self._consecutive = bool(declared) and declared == list(range(declared[0], declared[-1] + 1))
        self._label_values_origin = label_values_origin
        self._tolerance = tolerance
        self._headers: dict[str, _Header] = {}

    @property
    def cases(self) -> list[str]:
        """Ids of the cases with images, sorted."""
        return sorted(self._images)

    def image_files(self, case_id: str) -> list[Path]:
        """The channel files of ``case_id`` in channel order."""
        return list(self._images[case_id])

    def label_file(self, case_id: str) -> Path:
        """The label file of ``case_id``."""
        try:
            return self._labels[case_id]
        except KeyError:
            raise KeyError(f"Case {case_id!r} has no label file") from None

    def read_image(self, case_id: str) -> Tensor:
        """Load and stack the channels, checking that they share one grid (load_image checks the values)."""
        paths = self._images[case_id]
        channels, problems = [], []
        ref: _Header | None = None
        for path in paths:
            data, geometry = _load(case_id, path)
            header = (tuple(data.shape[1:]), geometry)
            if ref is None:
                ref = header
            else:
                differences = geometry_mismatch(*header, *ref, tolerance=self._tolerance)
                if differences:
                    problems.append(
                        f"case {case_id!r}: {show_path(path)} is not on the grid of {show_path(paths[0])} "
                        f"({'; '.join(differences)}); resample the channels onto one grid"
                    )
            channels.append(data)
        if problems:
            raise DatasetError(f"case {case_id!r}", problems)
        assert ref is not None
        self._headers[case_id] = ref
        return torch.cat(channels).float()

    def _header(self, case_id: str) -> _Header:
        if case_id not in self._headers:
            data, geometry = _load(case_id, self._images[case_id][0])
            self._headers[case_id] = (tuple(data.shape[1:]), geometry)
        return self._headers[case_id]

    def read_geometry(self, case_id: str) -> Geometry:
        """Geometry of the first channel (remembered from the last read)."""
        return self._header(case_id)[1]

    def read_label(self, case_id: str) -> Tensor:
        """Load the label, checking its grid against the image's and its ids against the declared ones."""
        path = self.label_file(case_id)
        label, geometry = _load(case_id, path, is_label=True)
        problems = []
        if label.shape[0] != 1:
            problems.append(f"case {case_id!r}: {show_path(path)} has {label.shape[0]} channels; a label map has one")
        differences = geometry_mismatch(label.shape[1:], geometry, *self._header(case_id), tolerance=self._tolerance)
        if differences:
            problems.append(
                f"case {case_id!r}: {show_path(path)} is not on the image grid of {show_path(self._images[case_id][0])}"
                f" ({'; '.join(differences)}); resample the label onto the image with nearest neighbour"
            )
        undeclared = self._undeclared(label)
        if undeclared:
            problems.append(
                f"case {case_id!r}: {show_path(path)} holds label value(s) {undeclared} not declared in "
                f"{self._label_values_origin} ({self._label_values.tolist()}); declare them or fix the label"
            )
        if problems:
            raise DatasetError(f"case {case_id!r}", problems)
        return label.long()

    def _undeclared(self, label: Tensor) -> list[int]:
        """Label ids not declared; a min/max test suffices for consecutive ids (nnU-Net's rule), sparing a sort."""
        if self._label_values is None or not label.numel():
            return []
        low, high = (int(v) for v in torch.aminmax(label))
        if self._consecutive and int(self._label_values[0]) <= low and high <= int(self._label_values[-1]):
            return []
        values = torch.unique(label)
        return values[~torch.isin(values, self._label_values)].tolist()
