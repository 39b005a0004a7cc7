"""Predict whole cases with a trained experiment: preprocess as in training, sliding windows, restore, export.

A :class:`Predictor` reads the experiment folder's record (:class:`~mipcandy.training.spec.ExperimentSpec`: network
input ``example_shape`` = channels and training patch, classes, bundle and options, and the preprocessing plan
when the data came from a cache) and loads ``checkpoint_best`` or ``checkpoint_latest`` on first use. Per case: crop,
normalize and resample with the training plan, Gaussian sliding windows of the training patch (overlap 0.5,
batched, optional mirroring TTA over all axes), softmax/sigmoid, probabilities resampled back onto the input grid
(:func:`restore_probabilities`), argmax/threshold, optional largest-component post-processing, and export with
the input's spacing, origin and direction. Inputs follow nnU-Net's naming: ``CASE_0000.nii.gz``,
``CASE_0001.nii.gz``... are the channels of case ``CASE`` and its prediction is written as ``CASE.nii.gz``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from mipcandy.atomic import atomic_path
from mipcandy.data.cases import CaseInput, parse_predictant
from mipcandy.data.conversion import convert_logits_to_ids
from mipcandy.data.cropping import bbox_slices
from mipcandy.data.geometry import Geometry
from mipcandy.data.io import fast_save, save_image
from mipcandy.data.postprocess import keep_largest_component, logits_to_probabilities
from mipcandy.data.preprocessing_plan import CaseProperties, PreprocessingPlan, preprocess_case, restore_case
from mipcandy.data.sliding_window import sliding_window_inference
from mipcandy.layer import WithNetwork
from mipcandy.training.experiment import BEST, LATEST
from mipcandy.training.network import build_experiment_network
from mipcandy.training.spec import read_experiment_spec

__all__ = [
    "Prediction",
    "CaseInput",
    "Predictor",
    "parse_predictant",
    "probabilities_to_labels",
    "restore_probabilities",
    "write_probabilities",
]

CHECKPOINTS = {"best": BEST, "latest": LATEST}
ProbabilityFormat = Literal["npz", "safetensors"]
_BUFFER_SHARE = 0.5  # aggregate on the accelerator while the case's buffers take at most this share of free memory


# ---- outputs ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One predicted case on the input's grid: int64 ``(1, *spatial)`` labels, optional float32 probabilities."""

    case_id: str
    labels: Tensor
    probabilities: Tensor | None
    geometry: Geometry


def probabilities_to_labels(probabilities: Tensor) -> Tensor:
    """Class ids ``(1, *spatial)``: argmax over classes, or probability > 0.5 for one sigmoid channel."""
    return convert_logits_to_ids(probabilities, threshold=0.5)


def restore_probabilities(probabilities: Tensor, properties: CaseProperties) -> Tensor:
    """Probabilities on a preprocessed grid put back on the original one (linear, which keeps them summing to 1).

    Outside the crop box, softmax outputs are background with certainty and a sigmoid output is 0.
    """
    restored = restore_case(probabilities, properties, fill=0.0)
    if restored.shape[0] > 1:
        outside = torch.ones(restored.shape[1:], dtype=torch.bool, device=restored.device)
        outside[bbox_slices(properties.bbox)] = False
        restored[0][outside] = 1.0
    return restored


def write_probabilities(probabilities: Tensor, path: Path, geometry: Geometry, case_id: str) -> None:
    """``.npz`` (nnU-Net's key ``probabilities``, class-first) or ``.safetensors`` (with the geometry), atomically."""
    if path.name.endswith(".safetensors"):
        fast_save(probabilities.float(), path, geometry, case_id=case_id)
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, probabilities=probabilities.float().cpu().numpy())


# ---- the predictor ------------------------------------------------------------------------------------------------
class Predictor(WithNetwork):
    """Predicts with an experiment folder's checkpoint; the network comes from the experiment's record.

    ``checkpoint`` is ``"best"``, ``"latest"`` or a path. The network is rebuilt from the folder's
    :class:`~mipcandy.training.spec.ExperimentSpec` by :func:`~mipcandy.training.network.build_experiment_network`,
    the builder the trainer used, unless a subclass implements :meth:`build_network` (a network trained without a
    bundle). ``example_shape``, ``num_classes``, ``bundle_options`` and ``plan`` override what the record holds.
    ``tta`` mirrors over every spatial axis. Sliding-window aggregation stays on the accelerator while the case
    fits in half its free memory and moves to the CPU otherwise (``buffer_device`` forces one). A subclass may bind
    a bundle (``bundle = "unet"``): it then refuses experiments of another bundle.
    """

    bundle: ClassVar[str | None] = None

    def __init__(self, experiment: str | os.PathLike[str], *, checkpoint: str | os.PathLike[str] = "best",
                 device: str | torch.device = "cpu", example_shape: Sequence[int] | None = None,
                 num_classes: int | None = None, bundle_options: Mapping[str, Any] | None = None,
                 plan: PreprocessingPlan | None = None, patch_size: Sequence[int] | None = None,
                 overlap: float = 0.5, batch_size: int | None = None, tta: bool = False, keep_largest: bool = False,
                 buffer_device: str | torch.device | None = None, amp: bool | None = None) -> None:
        super().__init__(device)
        self.experiment = Path(experiment)
        self.spec = spec = read_experiment_spec(self.experiment)
        recorded = spec.options.bundle
        if self.bundle is not None and recorded != self.bundle:
            raise ValueError(f"{self.experiment} was trained with bundle {recorded!r}, not {self.bundle!r}: use "
                             f"mipcandy.Predictor (it reads the bundle from the record)")
        self.checkpoint_path = _checkpoint_path(self.experiment, checkpoint)
        self.example_shape = tuple(int(n) for n in (example_shape or spec.example_shape))
        self.options = replace(spec.options, num_classes=num_classes or spec.num_classes,
                               bundle_options={**spec.options.bundle_options, **(bundle_options or {})})
        self.num_classes = int(self.options.num_classes or 0)
        self.plan = plan if plan is not None else spec.preprocessing_plan
        self.patch_size = tuple(int(n) for n in (patch_size if patch_size is not None else self.example_shape[1:]))
        self.overlap = overlap
        self.batch_size = batch_size or spec.options.sliding_window_batch_size
        self.tta = tta
        self.keep_largest = keep_largest
        self.buffer_device = None if buffer_device is None else torch.device(buffer_device)
        self.amp = amp
        self._model: nn.Module | None = None

    # ---- network ----------------------------------------------------------------------------------------------
    def build_network(self, example_shape: Sequence[int]) -> nn.Module:
        """The experiment's network, rebuilt by the trainer's builder from the record."""
        return build_experiment_network(self.options, example_shape)

    @property
    def model(self) -> nn.Module:
        """The network with the checkpoint's weights, on the device in eval mode (loaded on first use)."""
        if self._model is None:
            model = self.load_model(self.example_shape, checkpoint=self.checkpoint_path)
            model.eval()
            self._model = model
        return self._model

    @property
    def checkpoint_info(self) -> dict[str, Any]:
        """The checkpoint's JSON sidecar (epoch, score, raw or EMA weights); empty when there is none."""
        sidecar = self.checkpoint_path.with_suffix(".json")
        return json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}

    @property
    def ndim(self) -> int:
        return len(self.patch_size)

    # ---- prediction -------------------------------------------------------------------------------------------
    def predict_case(self, image: Tensor, geometry: Geometry | None = None, *, case_id: str = "case",
                     properties: CaseProperties | None = None, probabilities: bool = False) -> Prediction:
        """Predict one ``(C, *spatial)`` case; ``properties`` marks an already preprocessed image."""
        self._check_case(image, case_id)
        geometry = geometry if geometry is not None else Geometry.identity(self.ndim)
        data = image.float()
        if properties is None and self.plan is not None:
            data, _, properties = preprocess_case(data.cpu(), None, geometry, self.plan, case_id=case_id)
        buffer = self._buffer_device(tuple(data.shape[1:]), data.shape[0])
        logits = sliding_window_inference(data.to(buffer), self.model, self.patch_size, overlap=self.overlap,
                                          batch_size=self.batch_size, num_classes=self.num_classes,
                                          mirror_axes=tuple(range(self.ndim)) if self.tta else None,
                                          device=self.device, buffer_device=buffer, amp=self.amp)
        scores = logits_to_probabilities(logits)
        del logits
        if properties is not None:
            scores = restore_probabilities(scores, properties)
            geometry = properties.geometry
        labels = probabilities_to_labels(scores)
        if self.keep_largest:
            labels = keep_largest_component(labels)
        return Prediction(case_id, labels.cpu(), scores.cpu() if probabilities else None, geometry)

    def predict(self, x: Any, *, probabilities: bool = False) -> Iterator[Prediction]:
        """Predict every case of ``x`` (see :func:`parse_predictant`), one at a time."""
        for case in self.cases(x):
            image, geometry = case.load()
            yield self.predict_case(image, geometry, case_id=case.case_id, properties=case.properties,
                                    probabilities=probabilities)

    def cases(self, x: Any) -> list[CaseInput]:
        """The cases of ``x``, checked against the network's input channels."""
        return parse_predictant(x, ndim=self.ndim, num_channels=self.example_shape[0])

    def predict_to_files(self, x: Any, folder: str | os.PathLike[str], *, save_probabilities: bool = False,
                         probabilities_format: ProbabilityFormat = "npz", file_ending: str | None = None,
                         console: Console | None = None, progress: bool = True) -> list[Path]:
        """Write ``CASE<ending>`` label maps (and ``CASE.npz``/``.safetensors`` probabilities) into ``folder``.

        The ending is ``file_ending``, else the input file's, else ``.nii.gz`` (3D) or ``.png`` (2D).
        """
        if probabilities_format not in ("npz", "safetensors"):
            raise ValueError(f"probabilities_format must be 'npz' or 'safetensors', got {probabilities_format!r}")
        cases = self.cases(x)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for case in _track(cases, console, progress):
            image, geometry = case.load()
            result = self.predict_case(image, geometry, case_id=case.case_id, properties=case.properties,
                                       probabilities=save_probabilities)
            path = folder / f"{case.case_id}{file_ending or case.file_ending or self._default_ending()}"
            save_image(result.labels, path, result.geometry)
            written.append(path)
            if result.probabilities is not None:
                write_probabilities(result.probabilities, folder / f"{case.case_id}.{probabilities_format}",
                                   result.geometry, case.case_id)
        return written

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _check_case(self, image: Tensor, case_id: str) -> None:
        if not isinstance(image, Tensor) or image.ndim != self.ndim + 1:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"case {case_id!r}: expected a (C, *spatial) image with {self.ndim} spatial axes "
                             f"(the network is {self.ndim}D), got {shape}")
        if image.shape[0] != self.example_shape[0]:
            raise ValueError(f"case {case_id!r} has {image.shape[0]} input channel(s) but the network of "
                             f"{self.experiment} takes {self.example_shape[0]}; give one file per channel "
                             f"({case_id}_0000, {case_id}_0001, ...)")

    def _buffer_device(self, spatial: tuple[int, ...], channels: int) -> torch.device:
        if self.buffer_device is not None:
            return self.buffer_device
        if self.device.type != "cuda":
            return torch.device("cpu")
        # Image, logits, weights and probabilities of the whole case, float32.
        needed = 4 * math.prod(spatial) * (channels + 2 * self.num_classes + 1)
        free, _ = torch.cuda.mem_get_info(self.device)
        return self.device if needed <= _BUFFER_SHARE * free else torch.device("cpu")

    def _default_ending(self) -> str:
        return ".nii.gz" if self.ndim == 3 else ".png"


def _checkpoint_path(folder: Path, checkpoint: str | os.PathLike[str]) -> Path:
    if isinstance(checkpoint, str) and checkpoint in CHECKPOINTS:
        path = folder / CHECKPOINTS[checkpoint]
        if not path.is_file():
            hint = " (no validation has improved the score yet?); use the latest checkpoint" if checkpoint == "best" \
                else "; the run saved no weights yet"
            raise FileNotFoundError(f"{folder} has no {path.name}{hint}")
        return path
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; use 'best', 'latest' or a .safetensors file")
    return path


def _track(cases: Iterable[CaseInput], console: Console | None, progress: bool) -> Iterator[CaseInput]:
    """A rich progress bar over the cases, naming the current one."""
    cases = list(cases)
    bar = Progress(TextColumn("Predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[case]}"),
                   console=console, disable=not progress, transient=True)
    with bar:
        task = bar.add_task("predict", total=len(cases), case="")
        for case in cases:
            bar.update(task, case=case.case_id)
            yield case
            bar.advance(task)
