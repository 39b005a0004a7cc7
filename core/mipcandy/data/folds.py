"""Cross-validation splits by case id, compatible with nnU-Net's ``splits_final.json``.

The default split reproduces nnU-Net v2 exactly: scikit-learn's ``KFold(5, shuffle=True, random_state=12345)``
over the sorted case ids (a NumPy ``RandomState(seed)`` shuffle of the indices, then contiguous folds whose first
``n % k`` folds hold one extra case). It is implemented here so that scikit-learn is not a dependency.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from mipcandy.atomic import atomic_write_text

Split = dict[str, list[str]]
"""One fold: ``{"train": [case ids], "val": [case ids]}``, the element type of ``splits_final.json``."""

Fold = int | Literal["all"]


def kfold_splits(case_ids: Sequence[str], *, num_folds: int = 5, seed: int = 12345) -> list[Split]:
    """nnU-Net's default k-fold split of ``case_ids`` (sorted first), identical to sklearn's shuffled ``KFold``."""
    keys = sorted(case_ids)
    if len(set(keys)) != len(keys):
        raise ValueError("Case ids must be unique to split them into folds")
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if num_folds > len(keys):
        raise ValueError(f"Cannot split {len(keys)} case(s) into {num_folds} folds; use num_folds <= {len(keys)}")
    order = np.arange(len(keys))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(num_folds, len(keys) // num_folds)
    sizes[: len(keys) % num_folds] += 1
    splits: list[Split] = []
    start = 0
    for size in sizes:
        val = set(order[start : start + size].tolist())
        start += size
        splits.append({
            "train": [key for i, key in enumerate(keys) if i not in val],
            "val": [key for i, key in enumerate(keys) if i in val],
        })
    return splits


def load_splits(path: str | os.PathLike[str]) -> list[Split]:
    """Read and check a ``splits_final.json``: a list of ``{"train": [...], "val": [...]}`` without leaks."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to regenerate the default splits") from err
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path} must hold a non-empty list of {{'train': [...], 'val': [...]}} objects")
    splits: list[Split] = []
    for k, entry in enumerate(data):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), list) for key in ("train", "val")):
            raise ValueError(f"{path}: fold {k} must be an object with 'train' and 'val' lists of case ids")
        train, val = [str(c) for c in entry["train"]], [str(c) for c in entry["val"]]
        leaked = sorted(set(train) & set(val))
        if leaked:
            raise ValueError(f"{path}: fold {k} has case(s) {leaked} in both train and val; remove them from one side")
        splits.append({"train": train, "val": val})
    return splits


def save_splits(splits: Sequence[Split], path: str | os.PathLike[str]) -> None:
    """Write ``splits`` as nnU-Net's ``splits_final.json`` (atomically)."""
    atomic_write_text(path, json.dumps([{"train": s["train"], "val": s["val"]} for s in splits], indent=4) + "\n")


def select_fold(
    case_ids: Sequence[str],
    fold: Fold,
    *,
    num_folds: int = 5,
    seed: int = 12345,
    splits_file: str | os.PathLike[str] | None = None,
) -> tuple[list[str], list[str]]:
    """The (train, val) case ids of ``fold``.

    ``fold="all"`` trains on every case and, as in nnU-Net, validates on the same cases (an optimistic score
    that only tracks convergence). With ``splits_file``, an existing file defines the folds (``num_folds`` and
    ``seed`` are then ignored); a missing one is created from the default split, as nnU-Net does. A fold index
    outside the available folds is an error (nnU-Net would silently fall back to a random 80:20 split).
    """
    if fold == "all":
        return sorted(case_ids), sorted(case_ids)
    if isinstance(fold, bool) or not isinstance(fold, int):
        raise ValueError(f"fold must be an integer index or 'all', got {fold!r}")
    if splits_file is not None and Path(splits_file).exists():
        splits, source = load_splits(splits_file), str(splits_file)
    else:
        splits, source = kfold_splits(case_ids, num_folds=num_folds, seed=seed), f"the default {num_folds}-fold split"
        if splits_file is not None:
            save_splits(splits, splits_file)
    if not 0 <= fold < len(splits):
        raise ValueError(f"Fold {fold} does not exist: {source} has folds 0 to {len(splits) - 1}")
    named = {case for split in splits for case in (*split["train"], *split["val"])}
    unknown = sorted(named - set(case_ids))
    if unknown:
        raise ValueError(
            f"{source} names {len(unknown)} case(s) not in the dataset: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}; fix or delete the splits file"
        )
    return list(splits[fold]["train"]), list(splits[fold]["val"])
