"""The experiment record: one typed, versioned ``ExperimentSpec`` per experiment folder, stored as ``config.json``.

Everything a run needs in order to be resumed, predicted or compared lives here, written once when the run starts
(and rewritten only when a resumed run extends its epochs) and read through :func:`read_experiment_spec` alone:
the bundle with its distribution, version and options, the network input (``example_shape``) and classes, every
training option with the seed, how patches were drawn (``sampling``), where the data came from with a fingerprint
of every case's files and the split (``data``), and the preprocessing plan. Values are JSON: a bundle option that
JSON cannot hold is refused when the run starts, never written as an object repr.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mipcandy.atomic import atomic_write_text
from mipcandy.data.preprocessing_plan import PreprocessingPlan
from mipcandy.training.options import TrainingOptions

SPEC_FORMAT = "mipcandy.experiment"
SPEC_VERSION = 1
CONFIG = "config.json"


class ExperimentSpecError(ValueError):
    """An experiment folder's ``config.json`` is missing, unreadable or of another format."""


@dataclass(frozen=True)
class BundleRecord:
    """The bundle that built the network: its entry-point name and the distribution that provided it."""

    name: str
    distribution: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class DataRecord:
    """Where the cases came from and how they were split.

    ``dataset`` is the raw dataset folder and ``cache`` the preprocessing cache (``None`` for data built in
    memory); ``case_files`` maps each case of the dataset to a digest of its files' names, sizes and modification
    times, so that a resume can tell which cases changed. ``fold`` is a fold index, ``"all"`` (every case trains)
    or ``None`` (a split made by hand), and ``train_cases``/``val_cases`` the split itself.
    """

    dataset: str | None = None
    cache: str | None = None
    case_files: Mapping[str, str] | None = None
    fold: int | str | None = None
    num_folds: int | None = None
    train_cases: tuple[str, ...] = ()
    val_cases: tuple[str, ...] = ()

    def changes(self, current: Mapping[str, str]) -> list[str]:
        """What differs between the recorded ``case_files`` and ``current``: added, removed and changed cases."""
        recorded = dict(self.case_files or {})
        added = sorted(set(current) - set(recorded))
        removed = sorted(set(recorded) - set(current))
        changed = sorted(c for c in set(recorded) & set(current) if recorded[c] != current[c])
        return [f"{what}: {', '.join(cases[:10])}{' ...' if len(cases) > 10 else ''}"
                for what, cases in (("cases added", added), ("cases removed", removed),
                                    ("cases whose files changed", changed)) if cases]


@dataclass(frozen=True)
class ExperimentSpec:
    """What one experiment is: enough to resume it, predict with it and compare it with others."""

    experiment_id: str
    created: str
    trainer: str
    num_epochs: int
    options: TrainingOptions
    example_shape: tuple[int, ...]
    num_classes: int
    class_names: Mapping[int, str] = field(default_factory=dict)
    channel_names: Mapping[int, str] = field(default_factory=dict)
    bundle: BundleRecord | None = None
    sampling: Mapping[str, Any] | None = None
    data: DataRecord | None = None
    preprocessing_plan: PreprocessingPlan | None = None
    versions: Mapping[str, str | None] = field(default_factory=dict)
    sanity: Mapping[str, Any] | None = None
    resumed: tuple[str, ...] = ()

    @property
    def patch_size(self) -> tuple[int, ...]:
        """The training patch (the spatial part of ``example_shape``): the sliding window of validation and
        prediction."""
        return self.example_shape[1:]

    @property
    def ndim(self) -> int:
        return len(self.patch_size)

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``config.json`` holds."""
        values = {
            "format": SPEC_FORMAT,
            "version": SPEC_VERSION,
            "experiment_id": self.experiment_id,
            "created": self.created,
            "trainer": self.trainer,
            "num_epochs": self.num_epochs,
            "example_shape": list(self.example_shape),
            "patch_size": list(self.patch_size),
            "num_classes": self.num_classes,
            "class_names": {str(k): v for k, v in self.class_names.items()},
            "channel_names": {str(k): v for k, v in self.channel_names.items()},
            "bundle": asdict(self.bundle) if self.bundle is not None else None,
            "options": self.options.to_dict(),
            "sampling": self.sampling,
            "data": asdict(self.data) if self.data is not None else None,
            "preprocessing_plan": self.preprocessing_plan.to_dict() if self.preprocessing_plan is not None else None,
            "versions": dict(self.versions),
            "sanity": self.sanity,
            "resumed": list(self.resumed),
        }
        return json.loads(json.dumps(values, allow_nan=False))

    @classmethod
    def from_json(cls, values: Mapping[str, Any], *, source: str = CONFIG) -> ExperimentSpec:
        """Read what :meth:`to_json` wrote; anything else raises :class:`ExperimentSpecError` naming ``source``."""
        if values.get("format") != SPEC_FORMAT or values.get("version") != SPEC_VERSION:
            raise ExperimentSpecError(f"{source} is not a {SPEC_FORMAT} version {SPEC_VERSION} record (format "
                                      f"{values.get('format')!r}, version {values.get('version')!r}); it was "
                                      "written by another version of mipcandy, or by hand")
        try:
            data = values["data"]
            bundle = values["bundle"]
            plan = values["preprocessing_plan"]
            return cls(
                experiment_id=str(values["experiment_id"]), created=str(values["created"]),
                trainer=str(values["trainer"]), num_epochs=int(values["num_epochs"]),
                options=TrainingOptions.from_dict(values["options"]),
                example_shape=tuple(int(n) for n in values["example_shape"]),
                num_classes=int(values["num_classes"]),
                class_names={int(k): str(v) for k, v in values["class_names"].items()},
                channel_names={int(k): str(v) for k, v in values["channel_names"].items()},
                bundle=BundleRecord(**bundle) if bundle is not None else None,
                sampling=values["sampling"],
                data=None if data is None else DataRecord(**{**data, "train_cases": tuple(data["train_cases"]),
                                                             "val_cases": tuple(data["val_cases"])}),
                preprocessing_plan=None if plan is None else PreprocessingPlan.from_dict(plan),
                versions=dict(values["versions"]), sanity=values["sanity"], resumed=tuple(values["resumed"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ExperimentSpecError(f"{source} is damaged ({type(error).__name__}: {error}); it cannot be "
                                      "resumed or predicted with") from error

    def with_resume(self, num_epochs: int, when: str) -> ExperimentSpec:
        """The record of this run resumed at ``when``, training to ``num_epochs``."""
        return replace(self, num_epochs=num_epochs, resumed=(*self.resumed, when))

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` into ``folder`` atomically."""
        path = Path(folder) / CONFIG
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path


def read_experiment_spec(folder: str | os.PathLike[str]) -> ExperimentSpec:
    """The :class:`ExperimentSpec` of an experiment folder: the one reader of ``config.json``.

    A missing folder or file raises ``FileNotFoundError``, an unreadable or foreign one
    :class:`ExperimentSpecError`, each naming the path and what to do.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"experiment folder {folder} does not exist")
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an experiment folder ({CONFIG} is missing); pass the folder a "
                                "training run created (it holds config.json and checkpoint_*.safetensors)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExperimentSpecError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ExperimentSpecError(f"{path} must hold a JSON object")
    return ExperimentSpec.from_json(values, source=str(path))


def class_names_from_labels(labels: Mapping[str, int] | None) -> dict[int, str]:
    """``{id: name}`` from a dataset's ``{name: id}`` labels."""
    return {int(v): str(k) for k, v in (labels or {}).items()}
