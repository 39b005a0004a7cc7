"""Pairing prediction and reference files by case name (nnU-Net naming: ``CASE<ending>``, any supported ending).

Files that are not images (``plans.json``, ``.npz``/``.pkl`` probabilities nnU-Net writes beside its
predictions), hidden files (e.g. temporary files of atomic writes) and sub-folders are ignored. Pairing never
guesses: a case present in one folder only, or two files of one case in the same folder, is an error that
lists every such case.
"""
from __future__ import annotations

import os
from pathlib import Path

from mipcandy.data.io import SUPPORTED_SUFFIXES, image_suffix

PathLike = str | os.PathLike[str]


class PairingError(ValueError):
    """Prediction and reference folders that do not hold the same cases."""


def _case_name(path: Path) -> str | None:
    """The case name of an image file (its name without the supported ending), or None for other files."""
    if path.name.startswith(".") or not path.is_file():
        return None
    try:
        suffix = image_suffix(path)
    except ValueError:
        return None
    return path.name[: -len(suffix)]


def list_cases(folder: PathLike) -> dict[str, Path]:
    """Case name -> image file of ``folder``, sorted by case name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the folder that holds one image file per case")
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        name = _case_name(path)
        if name is not None:
            files.setdefault(name, []).append(path)
    clashes = {name: paths for name, paths in files.items() if len(paths) > 1}
    if clashes:
        listing = "; ".join(f"{name}: {', '.join(p.name for p in paths)}" for name, paths in sorted(clashes.items()))
        raise PairingError(f"{folder} holds several files for one case ({listing}); keep one file per case")
    return {name: paths[0] for name, paths in sorted(files.items())}


def pair_folders(predictions: PathLike, references: PathLike) -> list[tuple[str, Path, Path]]:
    """``(case, prediction file, reference file)`` for every case, sorted by case name.

    Raises :class:`PairingError` naming both folders and listing every reference without a prediction and
    every prediction without a reference.
    """
    predicted, reference = list_cases(predictions), list_cases(references)
    missing = sorted(set(reference) - set(predicted))
    extra = sorted(set(predicted) - set(reference))
    problems = []
    if missing:
        problems.append(f"{len(missing)} reference case(s) without a prediction: {', '.join(missing)}")
    if extra:
        problems.append(f"{len(extra)} prediction(s) without a reference case: {', '.join(extra)}")
    if not reference and not predicted:
        problems.append(f"neither folder holds an image file ({', '.join(SUPPORTED_SUFFIXES)})")
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise PairingError(
            f"Predictions in {predictions} and references in {references} do not pair up by case name:\n{listing}\n"
            f"Each case needs a file CASE<ending> in both folders (the endings may differ); add the missing files "
            f"or remove the extra ones."
        )
    return [(case, predicted[case], reference[case]) for case in reference]
