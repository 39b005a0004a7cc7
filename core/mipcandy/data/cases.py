"""One input adapter for prediction and evaluation: whatever a user passes becomes a list of named cases.

:func:`parse_predictant` turns a file, a folder, a list of files or tensors, a tensor or a dataset into
:class:`CaseInput` objects, each loading ``(image, geometry)`` on demand. Files follow nnU-Net's naming:
``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``... are the channels of case ``CASE`` (``channels=True``, for images);
label maps and predictions are one file ``CASE<ending>`` per case (``channels=False``). The predictor and the
evaluator both read their inputs through it, so a folder means the same cases to both.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from mipcandy.data.dataset import DatasetError
from mipcandy.data.files import FileReader
from mipcandy.data.geometry import Geometry
from mipcandy.data.io import SUPPORTED_SUFFIXES, image_suffix
from mipcandy.data.preprocessing_plan import CaseProperties


class NoImagesError(FileNotFoundError):
    """A folder holds no image file."""


_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class CaseInput:
    """One case of an input: its id, how to load ``(image, geometry)``, and the files it comes from.

    ``properties`` is set when the image is already preprocessed (a preprocessed dataset): it is then fed to the
    network as it is and the prediction restored with these properties.
    """

    case_id: str
    loader: Callable[[], tuple[Tensor, Geometry | None]]
    files: tuple[Path, ...] = ()
    properties: CaseProperties | None = None

    def load(self) -> tuple[Tensor, Geometry | None]:
        return self.loader()

    @property
    def file_ending(self) -> str | None:
        """The ending of the case's first file (predictions are written in the same format), if from files."""
        return image_suffix(self.files[0]) if self.files else None


@runtime_checkable
class ImageSource(Protocol):
    """A dataset of named images with their geometry (every ``CaseDataset``)."""

    @property
    def case_ids(self) -> list[str]: ...

    def image(self, i: int) -> Tensor: ...

    def geometry(self, i: int) -> Geometry: ...


@runtime_checkable
class PreprocessedSource(ImageSource, Protocol):
    """Images already preprocessed, with how each was (a ``PreprocessedDataset``): fed to the network as they are."""

    def properties(self, i: int) -> CaseProperties: ...


def parse_predictant(x: Any, *, ndim: int | None = None, num_channels: int | None = None,
                     channels: bool = True) -> list[CaseInput]:
    """The cases in ``x``: a file, a folder, a list of files or tensors, a tensor, or a dataset.

    With ``channels`` (images), files named ``CASE_XXXX<ending>`` are grouped into case ``CASE`` with channels in
    index order (nnU-Net); other files are one case each, named by their stem. Without (label maps, predictions),
    every file is one case named by its stem, and two files of one case are an error. A folder's images are taken in
    sorted order (hidden and non-image files are skipped). With ``num_channels``, every case must have exactly
    channels ``0..n-1``; a missing or extra channel file raises a :class:`DatasetError` naming the case. A tensor is
    one case ``(C, *spatial)``, or a batch ``(B, C, *spatial)`` when it has ``ndim + 2`` axes; tensors are named
    ``case0000``, ``case0001``... An :class:`ImageSource` dataset keeps its ids, and a :class:`PreprocessedSource`
    its ``properties(i)``.
    """
    if isinstance(x, Tensor):
        return _tensor_cases([x] if ndim is None or x.ndim != ndim + 2 else list(x))
    if isinstance(x, str | os.PathLike):
        path = Path(x)
        if path.is_dir():
            return sorted(_file_cases(_folder_images(path), num_channels, source=str(path), channels=channels),
                          key=_case_key)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist; pass an image file, a folder of images, a list, a "
                                    "tensor or a dataset")
        return _file_cases([path], num_channels, source=str(path), channels=channels)
    if isinstance(x, ImageSource):
        return _dataset_cases(x)
    if isinstance(x, Sequence) and not isinstance(x, str | bytes):
        items = list(x)
        if not items:
            raise ValueError("nothing to predict: the input list is empty")
        if all(isinstance(item, Tensor) for item in items):
            return _tensor_cases(items)
        if all(isinstance(item, str | os.PathLike) for item in items):
            missing = [str(p) for p in items if not Path(p).is_file()]
            if missing:
                raise FileNotFoundError(f"input file(s) {missing} do not exist")
            return _file_cases([Path(p) for p in items], num_channels, source="the input list", channels=channels)
        kinds = sorted({type(item).__name__ for item in items})
        raise TypeError(f"an input list holds either image paths or tensors, not a mix of {kinds}")
    raise TypeError(f"cannot predict a {type(x).__name__}: pass an image file, a folder, a list of files or tensors, "
                    "a (C, *spatial) tensor or a dataset")


def _case_key(case: CaseInput) -> str:
    return case.case_id


def _tensor_cases(tensors: Sequence[Tensor]) -> list[CaseInput]:
    return [CaseInput(f"case{i:04d}", partial(_in_memory, t)) for i, t in enumerate(tensors)]


def _in_memory(tensor: Tensor) -> tuple[Tensor, Geometry | None]:
    return tensor, None


def _dataset_cases(dataset: ImageSource) -> list[CaseInput]:
    preprocessed = isinstance(dataset, PreprocessedSource)
    return [CaseInput(case_id, partial(_dataset_case, dataset, i),
                      properties=dataset.properties(i) if preprocessed else None)
            for i, case_id in enumerate(dataset.case_ids)]


def _dataset_case(dataset: ImageSource, i: int) -> tuple[Tensor, Geometry | None]:
    return dataset.image(i), dataset.geometry(i)


def _folder_images(folder: Path) -> list[Path]:
    images = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
              and p.name.lower().endswith(SUPPORTED_SUFFIXES) and p.name.lower() not in SUPPORTED_SUFFIXES]
    if not images:
        raise NoImagesError(f"{folder} holds no images ({', '.join(SUPPORTED_SUFFIXES)})")
    return images


def _file_cases(paths: Sequence[Path], num_channels: int | None, *, source: str,
                channels: bool = True) -> list[CaseInput]:
    """Group channel files into cases, in order of first appearance, checking the channels of every case."""
    groups: dict[str, dict[int, Path]] = {}
    grouped: dict[str, bool] = {}
    problems: list[str] = []
    for path in paths:
        stem = path.name[: -len(image_suffix(path))]
        match = _CHANNEL_FILE.match(stem) if channels else None
        case, channel = (match["case"], int(match["channel"])) if match else (stem, 0)
        if case in grouped and grouped[case] != bool(match):
            problems.append(f"case {case!r}: {path.name} clashes with the case's other file(s) "
                            f"{sorted(p.name for p in groups[case].values())}; rename one")
            continue
        files = groups.setdefault(case, {})
        grouped[case] = bool(match)
        if channel in files and not channels:
            problems.append(f"{case}: {', '.join(sorted((files[channel].name, path.name)))} are files of one case; "
                            "keep one file per case")
            continue
        if channel in files:
            problems.append(f"case {case!r}: {path.name} and {files[channel].name} are both channel {channel}")
            continue
        files[channel] = path
    for case, files in groups.items():
        if grouped[case]:
            problems += _channel_problems(case, files, num_channels)
    if problems:
        raise DatasetError(source, problems)
    reader = FileReader({case: [files[c] for c in sorted(files)] for case, files in groups.items()})
    return [CaseInput(case, partial(_file_case, reader, case), tuple(reader.image_files(case)))
            for case in groups]


def _channel_problems(case: str, files: Mapping[int, Path], num_channels: int | None) -> list[str]:
    expected = num_channels if num_channels is not None else max(files) + 1
    first = next(iter(files.values()))
    ending = image_suffix(first)
    need = f"the network takes {num_channels} channel(s)" if num_channels is not None else "channels are numbered 0.."
    missing = [f"case {case!r}: channel file {case}_{c:04d}{ending} is missing ({need}); add it"
               for c in range(expected) if c not in files]
    extra = [f"case {case!r}: {files[c].name} is channel {c}, but the network takes {expected} channel(s); remove it"
             for c in sorted(files) if c >= expected]
    return missing + extra


def _file_case(reader: FileReader, case: str) -> tuple[Tensor, Geometry | None]:
    image = reader.read_image(case)
    return image, reader.read_geometry(case)
