"""Pairing prediction and reference files by case name (nnU-Net naming: ``CASE<ending>``, any supported ending).

Files that are not images (``plans.json``, ``.npz``/``.pkl`` probabilities nnU-Net writes beside its
predictions), hidden files (e.g. temporary files of atomic writes) and sub-folders are ignored. Pairing never
guesses: a case present in one folder only, or two files of one case in the same folder, is an error that
lists every such case.
"""
from __future__ import annotations

import os
from pathlib import Path

from mipcandy.data.cases import NoImagesError, parse_predictant
from mipcandy.data.dataset import DatasetError
from mipcandy.data.io import SUPPORTED_SUFFIXES

PathLike = str | os.PathLike[str]


class PairingError(ValueError):
    """Prediction and reference folders that do not hold the same cases."""


def list_cases(folder: PathLike) -> dict[str, Path]:
    """Case name -> image file of ``folder``, sorted by case name (read by the predictor's input adapter,
    :func:`~mipcandy.data.cases.parse_predictant`, one file per case); empty when it holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the folder that holds one image file per case")
    try:
        cases = parse_predictant(folder, channels=False)
    except NoImagesError:
        return {}
    except DatasetError as error:
        raise PairingError(f"{folder} holds several files for one case: {'; '.join(error.problems)}") from None
    return {case.case_id: case.files[0] for case in cases}


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
