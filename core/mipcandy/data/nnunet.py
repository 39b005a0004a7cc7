"""nnU-Net v2 raw datasets: ``dataset.json``, ``images{split}/CASE_XXXX{ending}`` and ``labels{split}/CASE{ending}``.

The folder structure and ``dataset.json`` are checked when the dataset is opened (all problems at once); voxel
contents (grids, NaN/Inf, undeclared label ids) are checked as cases are read, or all at once by ``validate()``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipcandy.data.dataset import DatasetDescription, DatasetError, Device, SupervisedDataset, UnsupervisedDataset
from mipcandy.data.files import FileReader, show_path

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
REQUIRED_KEYS = ("channel_names", "labels", "file_ending")


@dataclass(frozen=True)
class NNUNetMetadata:
    """The parts of ``dataset.json`` a dataset needs, checked; ``raw`` keeps the whole file."""

    channel_names: dict[int, str]
    labels: dict[str, int]
    file_ending: str
    raw: dict[str, Any]

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.labels)


def read_dataset_json(folder: str | os.PathLike[str]) -> NNUNetMetadata:
    """Parse and check ``folder/dataset.json``; region-based labels and the ignore label are rejected for now."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; an nnU-Net raw dataset folder needs a dataset.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(str(path), [f"not valid JSON ({err})"]) from err
    if not isinstance(raw, dict):
        raise DatasetError(str(path), ["must hold a JSON object"])
    if "channel_names" not in raw and "modality" in raw:  # nnU-Net v1 name of the same key
        raw = {**raw, "channel_names": raw["modality"]}
    problems = [f"lacks the key {key!r}; add it (see nnU-Net's dataset_format.md)" for key in REQUIRED_KEYS
                if key not in raw]
    if problems:
        raise DatasetError(str(path), problems)
    channel_names, problems = _channel_names(raw["channel_names"])
    labels, label_problems = parse_labels(raw["labels"])
    problems += label_problems
    if not isinstance(raw["file_ending"], str) or not raw["file_ending"].startswith("."):
        problems.append(f"'file_ending' must be a string like '.nii.gz', got {raw['file_ending']!r}")
    if problems:
        raise DatasetError(str(path), problems)
    return NNUNetMetadata(channel_names, labels, raw["file_ending"], raw)


def _channel_names(value: Any) -> tuple[dict[int, str], list[str]]:
    """Channel index -> name from ``dataset.json``, with problems if the indices are not 0..C-1."""
    if not isinstance(value, dict) or not value:
        return {}, [f"'channel_names' must map channel indices to names, e.g. {{'0': 'CT'}}, got {value!r}"]
    try:
        names = {int(k): str(v) for k, v in value.items()}
    except ValueError:
        return {}, [f"'channel_names' keys must be channel indices ('0', '1', ...), got {sorted(value)}"]
    if sorted(names) != list(range(len(names))):
        return {}, [f"'channel_names' indices must be 0..{len(names) - 1} without gaps, got {sorted(names)}"]
    return dict(sorted(names.items())), []


def parse_labels(value: Any) -> tuple[dict[str, int], list[str]]:
    """Class name -> id from ``dataset.json``, with problems unless ids are consecutive integers from 0."""
    if not isinstance(value, dict) or not value:
        return {}, [f"'labels' must map class names to ids, e.g. {{'background': 0, 'tumor': 1}}, got {value!r}"]
    if "ignore" in value:
        return {}, ["the 'ignore' label is not supported yet; remove it (and its voxels) from the dataset"]
    regions = sorted(name for name, v in value.items() if isinstance(v, list | tuple))
    if regions:
        return {}, [f"region-based labels {regions} are not supported yet; declare one integer id per class"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
        return {}, [f"'labels' ids must be integers, got {value!r}"]
    if sorted(value.values()) != list(range(len(value))):
        ids = sorted(value.values())
        return {}, [f"'labels' ids must be 0 (background) to {len(value) - 1} without gaps, got {ids}"]
    return dict(value), []


def index_split(
    folder: Path, split: str, metadata: NNUNetMetadata, *, with_labels: bool
) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    """Map each case of ``images{split}`` to its channel files (and label file), raising on any naming problem."""
    ending, channels = metadata.file_ending, metadata.channel_names
    image_dir, label_dir = folder / f"images{split}", folder / f"labels{split}"
    required = [image_dir, label_dir] if with_labels else [image_dir]
    hint = {label_dir: " (NNUNetImageDataset reads images without labels)"}
    missing_dirs = [f"folder {d.name}/ is missing{hint.get(d, '')}" for d in required if not d.is_dir()]
    if missing_dirs:
        raise DatasetError(str(folder), missing_dirs)
    problems: list[str] = []
    found: dict[str, dict[int, Path]] = {}
    for path in _entries(image_dir):
        match = _CHANNEL_FILE.match(path.name[: -len(ending)]) if path.name.endswith(ending) else None
        if match is None:
            problems.append(f"{show_path(path)} is not named CASE_XXXX{ending}; rename or remove it")
            continue
        case, channel = match["case"], int(match["channel"])
        if channel not in channels:
            problems.append(
                f"case {case!r}: {show_path(path)} has channel index {channel}, but dataset.json 'channel_names' "
                f"declares {sorted(channels)}; remove the file or declare the channel"
            )
            continue
        found.setdefault(case, {})[channel] = path
    for case, files in sorted(found.items()):
        problems += [
            f"case {case!r}: channel {c} ({channels[c]}) file {image_dir.name}/{case}_{c:04d}{ending} is missing; "
            "add it or remove the case's other channel files"
            for c in channels if c not in files
        ]
    labels: dict[str, Path] = {}
    if with_labels:
        for path in _entries(label_dir):
            case = path.name[: -len(ending)] if path.name.endswith(ending) else None
            if case is None or case not in found:
                problems.append(f"{show_path(path)} matches no case in {image_dir.name}/ (files CASE_XXXX{ending}); "
                                "remove it or add the case's images")
            else:
                labels[case] = path
        problems += [f"case {case!r}: label file {label_dir.name}/{case}{ending} is missing; add it or remove the "
                     "case's images" for case in sorted(found) if case not in labels]
    if not found and not problems:
        problems.append(f"{image_dir.name}/ holds no {ending} images")
    if problems:
        raise DatasetError(str(folder), problems)
    return {case: [files[c] for c in sorted(files)] for case, files in found.items()}, labels


def _entries(folder: Path) -> list[Path]:
    """Visible entries of ``folder`` (hidden files, such as unfinished atomic writes, are skipped)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


class NNUNetInfo:
    """``dataset.json`` accessors and opening logic shared by the labelled and image-only nnU-Net datasets."""

    folder: Path
    split: str
    metadata: NNUNetMetadata

    def _open_split(self, folder: str | os.PathLike[str], split: str, *, with_labels: bool) -> FileReader:
        """Check ``dataset.json`` and the split's files; remember them and return the reader of the cases."""
        self.folder, self.split = Path(folder), split
        self.metadata = read_dataset_json(self.folder)
        images, labels = index_split(self.folder, split, self.metadata, with_labels=with_labels)
        declared = self.metadata.raw.get("numTraining")
        if split == "Tr" and declared is not None and declared != len(images):
            raise DatasetError(str(self.folder), [
                f"dataset.json says numTraining={declared} but imagesTr/ holds {len(images)} cases; "
                "fix numTraining or the folder"
            ])
        return FileReader(images, labels if with_labels else None, label_values=self.metadata.labels.values(),
                          label_values_origin="dataset.json 'labels'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r}, split={self.split!r}: {len(self)} cases)"  # type: ignore[arg-type]

    @property
    def dataset_json(self) -> dict[str, Any]:
        """The parsed ``dataset.json``."""
        return self.metadata.raw

    @property
    def channel_names(self) -> dict[int, str]:
        """Channel index -> name (the name picks the normalization, e.g. 'CT')."""
        return dict(self.metadata.channel_names)

    @property
    def labels(self) -> dict[str, int]:
        """Class name -> id, background 0."""
        return dict(self.metadata.labels)

    def describe(self) -> DatasetDescription:
        """Class and channel names from ``dataset.json``."""
        return DatasetDescription(name=self.folder.name, labels=self.labels, channel_names=self.channel_names)

    @property
    def file_ending(self) -> str:
        """File ending of every image and label, e.g. '.nii.gz'."""
        return self.metadata.file_ending

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return self.metadata.num_classes


class NNUNetDataset(NNUNetInfo, SupervisedDataset):
    """An nnU-Net v2 raw dataset split (``images{split}`` + ``labels{split}``) with channels stacked in order."""

    def __init__(self, folder: str | os.PathLike[str], *, split: str = "Tr", device: Device = "cpu") -> None:
        reader = self._open_split(folder, split, with_labels=True)
        SupervisedDataset.__init__(self, reader, reader.cases, device=device)


class NNUNetImageDataset(NNUNetInfo, UnsupervisedDataset):
    """The images of an nnU-Net split without labels (e.g. ``imagesTs`` for inference)."""

    def __init__(self, folder: str | os.PathLike[str], *, split: str = "Ts", device: Device = "cpu") -> None:
        reader = self._open_split(folder, split, with_labels=False)
        UnsupervisedDataset.__init__(self, reader, reader.cases, device=device)
