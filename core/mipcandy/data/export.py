"""Writing datasets in nnU-Net v2 raw format, so any supervised dataset can be used by nnU-Net (or re-read here)."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from rich.progress import track
from torch import Tensor

from mipcandy.atomic import atomic_write_text
from mipcandy.data.dataset import DatasetError, SupervisedDataset
from mipcandy.data.geometry import Geometry
from mipcandy.data.io import image_suffix, save_image
from mipcandy.data.nnunet import parse_labels


def require_empty_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` or accept it empty: writing into an existing dataset would mix two datasets' files."""
    path = Path(folder)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder; choose a new folder or delete it first")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_case(
    folder: Path,
    case_id: str,
    image: Tensor,
    label: Tensor | None,
    geometry: Geometry,
    *,
    split: str = "Tr",
    file_ending: str = ".nii.gz",
) -> None:
    """Write one case as ``images{split}/{case_id}_XXXX`` channel files and ``labels{split}/{case_id}``."""
    if not case_id or "/" in case_id or "\\" in case_id or case_id.startswith("."):
        raise ValueError(f"Case id {case_id!r} cannot be a file name; use letters, digits, '_' and '-'")
    for c in range(image.shape[0]):
        save_image(image[c : c + 1], folder / f"images{split}" / f"{case_id}_{c:04d}{file_ending}", geometry)
    if label is not None:
        save_image(label, folder / f"labels{split}" / f"{case_id}{file_ending}", geometry)


def write_dataset_json(
    folder: Path,
    *,
    name: str,
    channel_names: Mapping[int, str],
    labels: Mapping[str, int],
    num_training: int,
    file_ending: str,
    **extra: Any,
) -> None:
    """Write ``dataset.json`` (atomically); call it last so that a complete ``dataset.json`` means a complete folder."""
    content = {
        "name": name,
        "channel_names": {str(k): v for k, v in sorted(channel_names.items())},
        "labels": dict(labels),
        "numTraining": num_training,
        "file_ending": file_ending,
        **extra,
    }
    atomic_write_text(folder / "dataset.json", json.dumps(content, indent=4) + "\n")


def export_nnunet(
    dataset: SupervisedDataset,
    folder: str | os.PathLike[str],
    *,
    name: str,
    channel_names: Mapping[int, str],
    labels: Mapping[str, int],
    file_ending: str = ".nii.gz",
    progress: bool = True,
) -> Path:
    """Write ``dataset`` as an nnU-Net raw dataset (imagesTr, labelsTr, dataset.json) with each case's geometry.

    ``folder`` must be new or empty. Every case is checked against ``channel_names`` and ``labels`` before it is
    written; ``dataset.json`` is written last, so a failed export leaves a folder without it. Returns the folder.
    """
    image_suffix(f"case{file_ending}")  # rejects endings no writer handles, before anything is written
    _, problems = parse_labels(dict(labels))
    if problems:
        raise DatasetError("export_nnunet labels", problems)
    declared = set(labels.values())
    root = require_empty_folder(folder)
    description = f"Exporting {len(dataset)} cases to {root.name}"
    for i in track(range(len(dataset)), description=description, disable=not progress):
        case_id = dataset.case_id(i)
        image, label = (t.cpu() for t in dataset[i])
        if image.shape[0] != len(channel_names):
            problems.append(f"case {case_id!r} has {image.shape[0]} channels but channel_names declares "
                            f"{len(channel_names)}; pass one name per channel")
        undeclared = sorted(set(torch.unique(label).tolist()) - declared)
        if undeclared:
            problems.append(f"case {case_id!r} holds label value(s) {undeclared} not in labels; declare them")
        if problems:
            raise DatasetError(f"export_nnunet to {root} (left without dataset.json)", problems)
        write_case(root, case_id, image, label, dataset.geometry(i), file_ending=file_ending)
    write_dataset_json(root, name=name, channel_names=channel_names, labels=labels, num_training=len(dataset),
                       file_ending=file_ending)
    return root
