"""The hook contract between the core and bundles.

A bundle is a distribution that declares an entry point in the group ``mipcandy.bundles``. The entry
point's name is the bundle's name (``unet``), and its value is a module or object holding functions
marked with :data:`hookimpl`. Hook functions take keyword arguments only, and may declare fewer
parameters than the spec: they receive just what they name.

Which implementation runs
-------------------------
* ``bundle_info``, ``build_network``, ``build_optimizer``, ``backward`` and ``trainer_class`` are
  **per-bundle** hooks. The
  trainer selects one bundle by its entry-point name, and the core calls these hooks on that bundle
  alone (plus the core's own defaults), through :meth:`mipcandy.plugins.PluginManager.call`. Installed
  bundles therefore never compete through pluggy's registration order. If the selected bundle does not
  implement a hook, or returns ``None``, the core's default answers (``build_optimizer``, ``backward``);
  ``build_network`` has no default: a bundle that can build networks must implement it.
* ``preview`` and the experiment events (``experiment_created``, ``epoch_updated``, ``preview_saved``,
  ``experiment_completed``, ``experiment_interrupted``) are **broadcast** hooks: every registered plugin that
  implements them is called, through :meth:`mipcandy.plugins.PluginManager.broadcast`, which isolates
  failures: one failing subscriber is reported and the others still run.

Compatibility policy
--------------------
The hook names and parameters below are a published contract. A new core may **add** a parameter to a
spec (old implementations simply do not ask for it), and may add new hooks (implementations of hooks
that only a newer core defines should be marked ``@hookimpl(optionalhook=True)``). A core never
**removes or renames** a parameter or a hook within a major version; a parameter to be retired is
first deprecated with pluggy's ``warn_on_impl_args``. Implementations must not give their parameters
default values: pluggy 1.6 never fills them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

import pluggy

if TYPE_CHECKING:
    import torch
    from torch import nn

PROJECT_NAME = "candy"
ENTRY_POINT_GROUP = "mipcandy.bundles"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class BundleInfo(TypedDict, total=False):
    """What a bundle says about itself (every key optional; the core fills gaps from package metadata)."""

    name: str
    summary: str
    dimensions: list[int]
    variants: list[str]


@runtime_checkable
class DeepSupervisedNetwork(Protocol):
    """The one switch of a network with deep-supervision heads.

    ``build_network`` always builds every head (so the trainer and the predictor build the same weights) and
    returns the network with deep supervision **off**: ``forward`` gives one ``(B, num_classes, *spatial)``
    tensor. ``set_deep_supervision(True)`` makes ``forward`` return a list of such tensors, full resolution
    first, each at a lower resolution than the one before. The loss sizes its weights from the number of
    outputs; the trainer switches deep supervision off for validation, and the predictor never switches it on.
    """

    def set_deep_supervision(self, enabled: bool) -> None:
        """Return every head's output (``True``) or only the full-resolution one (``False``)."""
        ...


@hookspec(firstresult=True)
def bundle_info() -> BundleInfo:
    """Describe the bundle for ``candy plugins`` and for option checking.

    :return: a :class:`BundleInfo` dict: ``summary`` (one line), ``dimensions`` (e.g. ``[2, 3]``) and
        ``variants`` (names accepted as ``options["variant"]``).
    """


@hookspec(firstresult=True)
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> nn.Module:
    """Build the bundle's network for one input.

    :param example_shape: shape of ONE input without the batch axis, channels first:
        ``(C, H, W)`` for 2D or ``(C, D, H, W)`` for 3D.
    :param num_classes: number of output channels the network must produce (classes, background included
        for multi-class softmax; 1 for a binary sigmoid output).
    :param options: the bundle's options, e.g. ``{"variant": "S"}`` (JSON values: they are recorded in the
        experiment's ``config.json``). A bundle must reject options it does not understand with a clear
        ``ValueError`` that lists the ones it accepts.
    :return: an ``nn.Module`` mapping ``(B, *example_shape)`` to ``(B, num_classes, *spatial)``. The build must
        be deterministic in its arguments (plan depth, strides or heads from ``example_shape`` here, never from
        state elsewhere): the predictor rebuilds the trained network by calling it again with what the
        experiment recorded. A network with deep-supervision heads implements :class:`DeepSupervisedNetwork`
        and starts with deep supervision off.
    """


@hookspec(firstresult=True)
def build_optimizer(params: Iterable[torch.nn.Parameter], options: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer for the network's parameters.

    :param params: the trainable parameters.
    :param options: the run's optimizer options (``TrainingOptions.optimizer_options``, e.g. ``{"lr": 3e-4}``),
        which override the bundle's own defaults; the core default reads ``lr``, ``momentum``,
        ``weight_decay`` and ``nesterov`` (nnU-Net's SGD: 1e-2, 0.99, 3e-5, True).
    :return: a ``torch.optim.Optimizer``.
    """


@hookspec(firstresult=True)
def build_scheduler(optimizer: torch.optim.Optimizer, num_epochs: int, options: Mapping[str, Any]) -> Any:
    """Build the learning-rate schedule, stepped once per epoch.

    :param optimizer: the optimizer ``build_optimizer`` returned.
    :param num_epochs: the planned number of epochs.
    :param options: the run's optimizer options, as for ``build_optimizer``.
    :return: an object with ``step()``, ``state_dict()`` and ``load_state_dict()`` (a torch LR scheduler). The
        core default is nnU-Net's poly decay (exponent 0.9) from the optimizer's lr to 0 over ``num_epochs``; a
        schedule that can be stretched when a resumed run is extended implements ``extend(num_epochs)``.
    """


@hookspec(firstresult=True)
def backward(images: torch.Tensor, labels: torch.Tensor, toolbox: Any,
             options: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
    """Run one forward and backward pass (without the optimizer step).

    :param images: a batch ``(B, C, *spatial)`` already on the model's device.
    :param labels: the matching labels ``(B, 1, *spatial)``, int64.
    :param toolbox: the trainer's :class:`~mipcandy.training.TrainerToolbox`; the core default uses
        ``toolbox.model``, ``toolbox.criterion`` (which returns ``(loss, metrics)``) and ``toolbox.grad_scaler``
        (``None`` unless float16 mixed precision runs).
    :param options: the bundle's options, as ``build_network`` received them (a bundle may offer its paper's
        objective as an option, e.g. ``{"loss": "dice"}``).
    :return: ``(loss value, {metric name: value})``. The implementation must call ``backward()`` (through
        ``toolbox.grad_scaler.scale(loss)`` when there is a scaler).
    """


@hookspec(firstresult=True)
def trainer_class() -> type:
    """The trainer class ``candy train`` should use for this bundle: only for a bundle that truly needs another
    training loop (a different objective over whole cases, several networks trained together...).

    Optional, and usually absent: the segmentation preset with this bundle's hooks covers networks, optimizers,
    schedules, losses (``backward``) and deep supervision. Network planning, options and losses never belong in a
    trainer subclass: they must be hooks, so that the predictor and resumed runs see them. The class must be a
    :class:`mipcandy.presets.SegmentationTrainer` subclass; import it inside the function, so that discovery stays
    light.
    """


@hookspec
def preview(image: torch.Tensor, label: torch.Tensor | None, prediction: torch.Tensor, folder: Path,
            case_id: str) -> list[Path] | None:
    """Render a preview of one case (broadcast to every plugin implementing it).

    :param image: one case ``(C, *spatial)`` on the CPU.
    :param label: its label ``(1, *spatial)``, or ``None`` when unknown.
    :param prediction: the predicted label map ``(1, *spatial)``.
    :param folder: where to write; each implementation picks file names that do not clash with others
        (prefix them with the bundle name).
    :param case_id: the case's identifier, for titles.
    :return: the paths written, or ``None``. A failing preview is reported and never stops training.
    """


# ---- experiment events: broadcast to every plugin (tracking frontends such as MLflow, W&B, Notion) -----------
# The trainer emits them from rank 0 only. A failing subscriber is reported and never stops training. Frontends
# selected for a run (``candy train --track``) receive them off the training loop, one worker thread each (see
# ``mipcandy.frontend``), in the order they were emitted.


@hookspec
def tracking_opened(root: Path) -> None:
    """A run selected this frontend (``--track``); called once, synchronously, before anything is written.

    :param root: the folder that holds every experiment of the run (embedded tracking stores live there).
    Raise to refuse the selection (a missing package or secret): the message reaches the user and training does not
    start. Do no slow work here.
    """


@hookspec
def experiment_created(experiment_id: str, folder: Path, config: Mapping[str, Any], root: Path | None,
                       model_summary: str | None, num_parameters: int | None, num_macs: int | None) -> None:
    """A training run started (or resumed: the same ``experiment_id`` and ``folder`` again).

    :param folder: its experiment folder; ``config`` is what ``config.json`` holds.
    :param root: the folder holding every experiment of the run, where embedded tracking stores live (``None`` when
        unknown).
    :param model_summary: a printable summary of the network (``None`` when not made).
    :param num_parameters: its trainable parameters (``None`` when not counted).
    :param num_macs: multiply-accumulates of one forward pass on the example input (``None`` when not measured).
    """


@hookspec
def epoch_updated(experiment_id: str, epoch: int, metrics: Mapping[str, float], num_epochs: int | None,
                  best_score: float | None, remaining_seconds: float | None) -> None:
    """Epoch ``epoch`` (1-based) ended; ``metrics`` holds that epoch's values only (losses, score, lr, time).

    :param num_epochs: the planned number of epochs (``None`` when unknown).
    :param best_score: the best (smoothed) validation score so far, ``None`` before the first validation.
    :param remaining_seconds: the estimated time to the end of the run (``None`` when unknown).
    """


@hookspec
def preview_saved(experiment_id: str, epoch: int, paths: Sequence[Path]) -> None:
    """Preview images of the worst validation case were (re)written at ``paths``."""


@hookspec
def experiment_completed(experiment_id: str, summary: Mapping[str, Any]) -> None:
    """The run finished normally; ``summary`` holds the best score, its epoch and the checkpoint paths."""


@hookspec
def experiment_interrupted(experiment_id: str, error: str) -> None:
    """The run stopped early: ``error`` describes the exception (``KeyboardInterrupt`` included)."""


# Event parameters added after the first release, with the value a caller that predates them means. Emitters
# (``ExperimentWriter.emit``, ``FrontendSet.emit``) fill them in, so implementations may always ask for them.
EVENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "experiment_created": {"root": None, "model_summary": None, "num_parameters": None, "num_macs": None},
    "epoch_updated": {"num_epochs": None, "best_score": None, "remaining_seconds": None},
}


def complete_event(hook: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` of event ``hook`` with the parameters a caller left out set to their :data:`EVENT_DEFAULTS`."""
    return {**EVENT_DEFAULTS.get(hook, {}), **kwargs}


PER_BUNDLE_HOOKS: tuple[str, ...] = ("bundle_info", "build_network", "build_optimizer", "build_scheduler", "backward",
                                     "trainer_class")
OPTIONAL_HOOKS: tuple[str, ...] = ("bundle_info", "trainer_class")  # per-bundle hooks that may answer None
EVENT_HOOKS: tuple[str, ...] = ("tracking_opened", "experiment_created", "epoch_updated", "preview_saved",
                                "experiment_completed", "experiment_interrupted")
BROADCAST_HOOKS: tuple[str, ...] = ("preview", *EVENT_HOOKS)
