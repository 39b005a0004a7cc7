"""The training lifecycle: build once, check, train for epochs of fixed length, validate, checkpoint, resume.

A run: seed everything, take the first real batch, build the network once, sanity-check it on that batch (shapes,
parameters, MACs), build the toolbox (optimizer, poly schedule, criterion, weight EMA, gradient scaler), then per
epoch: ``iterations_per_epoch`` optimizer steps (zero grad, ``backward`` under autocast, unscale, clip, step, EMA
update), one scheduler step, validation on whole cases (every ``validate_every`` epochs), the smoothed score and
best checkpoint, the artefacts and finally the full training state, written atomically. ``recover_from(folder)``
and ``continue_training()`` resume at the next epoch with every RNG, the data position and all counters restored.

With a ``bundle``, ``build_network``, ``build_optimizer``, ``build_scheduler`` and ``backward`` go to that bundle
through the plugin manager (the core answers where the bundle does not), and the worst-case preview is broadcast to
every plugin. Everything a run needs to be resumed or predicted is recorded once, in its
:class:`~mipcandy.training.spec.ExperimentSpec` (``config.json``), before the first epoch.

Launched by torchrun with several processes, a run trains data-parallel (see :mod:`mipcandy.training.distributed`):
each rank trains on its share of the batches with its network in DistributedDataParallel, validates its share of
the cases, and rank 0 alone creates the folder and writes, prints and emits; every rank takes the same decisions.
"""
from __future__ import annotations

import json
import math
import platform
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from mipcandy import defaults
from mipcandy.common.optim import ExponentialMovingAverage, PolyLRScheduler
from mipcandy.common.regressions import ScorePrediction, predict_score
from mipcandy.console import make_console
from mipcandy.data.dataset import CaseSource, DatasetDescription
from mipcandy.data.roi import RandomROIDataset
from mipcandy.frontend import open_frontends
from mipcandy.layer import WithNetwork
from mipcandy.plugins import get_plugin_manager
from mipcandy.training import distributed
from mipcandy.training.checkpoint import load_state
from mipcandy.training.console import epoch_table, format_duration, sanity_table, validation_table
from mipcandy.training.experiment import (
    BEST,
    LATEST,
    STATE,
    ArtefactWarning,
    ExperimentWriter,
    create_experiment_folder,
)
from mipcandy.training.network import build_experiment_network, set_deep_supervision
from mipcandy.training.options import TrainingOptions
from mipcandy.training.sanity import SanityCheckResult, sanity_check
from mipcandy.training.seed import capture_rng_state, restore_rng_state, set_seed
from mipcandy.training.spec import (
    BundleRecord,
    DataRecord,
    ExperimentSpec,
    class_names_from_labels,
    read_experiment_spec,
)
from mipcandy.training.stream import BatchStream
from mipcandy.training.toolbox import TrainerToolbox
from mipcandy.training.validation import CaseResult, ValidationResult, smooth_score

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Tracker:
    """Counters that decide checkpoints and stopping; saved with the state so a resumed run decides the same."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    smoothed_score: float | None = None
    stale_validations: int = 0
    stopped_early: bool = False


FRONTEND_CLOSE_SECONDS = 60.0  # a hung tracker never keeps a finished run from returning (metrics.csv has it all)
RUNTIME_OPTIONS = ("num_workers", "track")  # options a resumed run may change: they do not change its results


class ResumeError(ValueError):
    """An experiment folder cannot be resumed as asked; nothing in it was changed."""


@dataclass(frozen=True)
class Recovery:
    """What ``recover_from`` read: the folder, its record and its last saved state (``None``: none was saved)."""

    folder: Path
    spec: ExperimentSpec
    state: dict[str, Any] | None


@dataclass(frozen=True)
class TrainingSummary:
    """What a finished (or early-stopped) run reports."""

    folder: Path
    epochs: int
    best_score: float
    best_epoch: int
    stopped_early: bool
    checkpoints: dict[str, str] = field(default_factory=dict)


class Trainer(WithNetwork):
    """Base trainer: subclasses supply ``build_criterion`` and ``validate_case`` (see ``SegmentationTrainer``).

    ``train_data`` is a :class:`~mipcandy.data.roi.RandomROIDataset` (resumed exactly, any number of workers) or a
    ``DataLoader`` of ``(images, labels)`` batches; ``val_data`` is a dataset of whole cases ``(image, label)``
    (``None`` turns validation off). The options of a run are :class:`TrainingOptions`: ``default_options`` for
    every run of a class, ``train(num_epochs, **options)`` for one run, and ``trainer.options`` (read-only) while it
    runs. ``bundle`` binds a class to an installed bundle (``class UNetTrainer(SegmentationTrainer): bundle =
    "unet"``). ``data_record`` tells the experiment record where the data came from (``candy train`` fills it).
    """

    default_options: ClassVar[TrainingOptions] = TrainingOptions()
    bundle: ClassVar[str | None] = None

    def __init__(self, root: str | Path, train_data: RandomROIDataset | DataLoader, val_data: Any = None, *,
                 device: str | torch.device = "cpu", console: Console | None = None, is_main_process: bool = True,
                 events: bool = True, data_record: DataRecord | None = None) -> None:
        super().__init__(device)
        self.root = Path(root)
        self.train_data = train_data
        self.val_data = val_data
        self.console = console if console is not None else make_console()
        self.is_main_process = is_main_process
        self.events = events
        self.data_record = data_record
        self.spec: ExperimentSpec | None = None
        self.writer: ExperimentWriter | None = None
        self.toolbox: TrainerToolbox | None = None
        self.tracker = Tracker()
        self.history: dict[str, list[Any]] = {}
        self.patch_size: tuple[int, ...] = ()
        self.sanity: SanityCheckResult | None = None
        self._options: TrainingOptions | None = None
        self._recovery: Recovery | None = None
        self._saved_epoch = 0
        self._current_epoch = 0
        self._session: distributed.Session | None = None

    @property
    def options(self) -> TrainingOptions:
        """The options of the current run (before a run: the class's defaults, bound to its bundle)."""
        if self._options is not None:
            return self._options
        return self.default_options if self.bundle is None else replace(self.default_options, bundle=self.bundle)

    # ---- public entry points ----------------------------------------------------------------------------------
    def train(self, num_epochs: int, **options: Any) -> TrainingSummary:
        """Train for ``num_epochs`` epochs in a new experiment folder; ``options`` override the defaults.

        The network is built and checked, and every option validated, before the folder is created: a run that
        cannot start leaves nothing behind.
        """
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
        return self._run(num_epochs, self.options.resolve(options), None)

    __call__ = train

    def recover_from(self, folder: str | Path) -> Self:
        """Read an experiment folder's record and last saved state; ``continue_training`` then resumes it.

        Nothing is written here. A folder whose run saved checkpoints of several epochs but no training state is
        refused (it cannot continue exactly); a run killed before its first state was saved (the state follows the
        first epoch's checkpoint) restarts in the same folder with the same seed, and so redoes that epoch exactly.
        """
        folder = Path(folder)
        spec = read_experiment_spec(folder)
        state_path = folder / STATE
        if state_path.is_file():
            state = load_state(state_path)
        elif (trained := _checkpointed_epochs(folder)) > 1:
            raise ResumeError(f"{folder} holds checkpoints of {trained} epochs but no {STATE}: "
                              "it cannot continue exactly where it stopped. Start a new run, or predict with its "
                              "checkpoint instead")
        else:
            state = None
        self._recovery = Recovery(folder, spec, state)
        return self

    def continue_training(self, num_epochs: int | None = None, **runtime: Any) -> TrainingSummary:
        """Resume the recovered run at its next epoch, up to ``num_epochs`` in total (default: as planned).

        More epochs than planned stretch the poly schedule to the new end (see ``PolyLRScheduler.extend``).
        ``runtime`` may change the options that do not change the results (``num_workers``). The data, network
        and state are checked against the record before anything in the folder changes.
        """
        if self._recovery is None:
            raise RuntimeError("call recover_from(folder) before continue_training()")
        refused = sorted(set(runtime) - set(RUNTIME_OPTIONS))
        if refused:
            raise ResumeError(f"a resumed run keeps its recorded options; only {list(RUNTIME_OPTIONS)} may change, "
                              f"not {refused}")
        recovery, self._recovery = self._recovery, None
        options = replace(recovery.spec.options, **runtime)
        return self._run(recovery.spec.num_epochs if num_epochs is None else num_epochs, options, recovery)

    @property
    def experiment_folder(self) -> Path | None:
        return None if self.writer is None else self.writer.folder

    # ---- builders (override, or let a bundle answer) ----------------------------------------------------------
    def build_network(self, example_shape: Sequence[int]) -> nn.Module:
        """The network for one input ``(C, *patch)``; by default the selected bundle builds it (with deep
        supervision off, as every bundle returns it: the trainer switches it on)."""
        return build_experiment_network(self.options, example_shape)

    def build_optimizer(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        """nnU-Net's SGD (the core default), or the bundle's optimizer."""
        options = self.options
        if options.bundle is None:
            return defaults.build_optimizer(params=params, options=options.optimizer_options)
        return get_plugin_manager().call(options.bundle, "build_optimizer", params=params,
                                         options=options.optimizer_options)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, num_epochs: int) -> Any:
        """Poly decay (exponent 0.9) from the optimizer's lr to 0, stepped once per epoch (or the bundle's)."""
        options = self.options
        if options.bundle is None:
            return defaults.build_scheduler(optimizer=optimizer, num_epochs=num_epochs)
        return get_plugin_manager().call(options.bundle, "build_scheduler", optimizer=optimizer,
                                         num_epochs=num_epochs, options=options.optimizer_options)

    def build_criterion(self) -> nn.Module:
        """The loss: ``criterion(outputs, labels) -> (loss, {name: float})``."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_criterion()")

    def build_ema(self, model: nn.Module) -> ExponentialMovingAverage:
        """A true exponential moving average of the weights (decay ``ema_decay``)."""
        return ExponentialMovingAverage(model, self.options.ema_decay)

    def build_grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for float16 autocast on CUDA; None otherwise (bfloat16 needs no scaling)."""
        options = self.options
        if options.amp and self.device.type == "cuda" and options.amp_dtype == "float16":
            return torch.amp.GradScaler("cuda")
        return None

    def build_toolbox(self, model: nn.Module, num_epochs: int) -> TrainerToolbox:
        """Optimizer, scheduler, criterion, EMA and scaler around an already built ``model``."""
        optimizer = self.build_optimizer([p for p in model.parameters() if p.requires_grad])
        return TrainerToolbox(model, optimizer, self.build_scheduler(optimizer, num_epochs),
                              self.build_criterion().to(self.device),
                              self.build_ema(model) if self.options.ema else None, self.build_grad_scaler())

    # ---- one training step --------------------------------------------------------------------------------------
    def backward(self, images: torch.Tensor, labels: torch.Tensor, toolbox: TrainerToolbox) -> tuple[float, dict]:
        """Forward, loss and ``loss.backward()`` (scaled when there is a GradScaler); the bundle's if it has one."""
        options = self.options
        if options.bundle is None:
            return defaults.backward(images=images, labels=labels, toolbox=toolbox)
        return get_plugin_manager().call(options.bundle, "backward", images=images, labels=labels, toolbox=toolbox,
                                         options=options.bundle_options)

    def autocast(self) -> Any:
        """The autocast context of forward passes (mixed precision on CUDA only)."""
        options = self.options
        if options.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=getattr(torch, options.amp_dtype))
        return nullcontext()

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, toolbox: TrainerToolbox) -> tuple[float, dict]:
        """Zero the gradients, back-propagate, unscale, clip, step the optimizer and update the EMA."""
        toolbox.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, metrics = self.backward(images, labels, toolbox)
        scaler, clip = toolbox.grad_scaler, self.options.grad_clip
        if scaler is not None:
            scaler.unscale_(toolbox.optimizer)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(toolbox.model.parameters(), clip)
        if scaler is not None:
            scaler.step(toolbox.optimizer)
            scaler.update()
        else:
            toolbox.optimizer.step()
        if toolbox.ema is not None:
            toolbox.ema.update(toolbox.model)
        return loss, metrics

    # ---- validation -------------------------------------------------------------------------------------------
    def validate_case(self, case_id: str, image: torch.Tensor, label: torch.Tensor,
                      toolbox: TrainerToolbox) -> CaseResult:
        """Score one whole case with ``toolbox.validation_model`` (higher is better)."""
        raise NotImplementedError(f"{type(self).__name__} must implement validate_case()")

    @contextmanager
    def validation_mode(self, model: nn.Module) -> Iterator[nn.Module]:
        """Eval mode, and deep supervision off while validating; both restored afterwards."""
        was_training, supervised = model.training, self.options.deep_supervision
        model.eval()
        if supervised:
            set_deep_supervision(model, False)
        try:
            yield model
        finally:
            model.train(was_training)
            if supervised:
                set_deep_supervision(model, True)

    def validate(self, toolbox: TrainerToolbox) -> ValidationResult:
        """Every validation case through ``validate_case``; only the worst case keeps its prediction.

        In a distributed run each rank validates cases ``rank, rank + W...`` with the plain network (no
        collective may run while the ranks hold different cases) and every rank receives all the results.
        """
        result = ValidationResult()
        session = self._session
        assert self.writer is not None
        indices = range(len(self.val_data)) if session is None else distributed.shard(len(self.val_data),
                                                                                       session.world)
        if session is not None:
            toolbox = replace(toolbox, model=distributed.unwrap_model(toolbox.model))
        with self.validation_mode(toolbox.validation_model), torch.no_grad(), \
                self.writer.progress(len(indices), "Validation") as advance:
            for i in indices:
                image, label = self.val_data[i]
                case_id = self.val_data.case_ids[i] if isinstance(self.val_data, CaseSource) else str(i)
                case = self.validate_case(case_id, image.to(self.device), label.to(self.device), toolbox)
                case.index = i
                result.add(case)
                advance()
        if session is not None:
            result = distributed.gather_validation(result, session, keep_prediction=self.options.preview)
        return result

    def score_bounds(self) -> tuple[float, float]:
        """The range of the validation score, for the forecast."""
        return (0.0, 1.0) if self.options.score == "dice" else (-math.inf, 0.0)

    def class_names(self) -> dict[int, str]:
        """Class id to name, from the dataset's description (``labels``, ``{name: id}``) when it has them."""
        return class_names_from_labels(self.describe_data().labels)

    def describe_data(self) -> DatasetDescription:
        """What the validation data (else the training cases) say about themselves (see ``CaseSource``)."""
        for source in (self.val_data, _case_source(self.train_data)):
            if isinstance(source, CaseSource):
                description = source.describe()
                if description.labels or description.plan is not None:
                    return description
        return DatasetDescription()

    # ---- the run ----------------------------------------------------------------------------------------------
    def _infer_num_classes(self) -> int:
        names = self.class_names()
        if len(names) < 2:
            raise ValueError("cannot tell the number of classes from the data (it has no 'labels'); pass "
                             "num_classes=... (1 for a binary sigmoid output, else classes incl. background)")
        return len(names)

    def _to_device(self, batch: Any) -> Batch:
        images, labels = batch
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True).long()  # batches may carry compact uint8 labels
        return images, labels

    def _run(self, num_epochs: int, options: TrainingOptions, recovery: Recovery | None) -> TrainingSummary:
        """Join the launch's processes (if torchrun started several), then run."""
        self._options = options
        self._session = session = distributed.join(self.device)
        try:
            if session is not None:  # every rank runs rank 0's options (a drawn seed differs per process)
                self.device, self.is_main_process = session.device, session.world.is_main
                self._options = options = distributed.from_main(options, session)
            return self._run_joined(num_epochs, options, recovery)
        finally:
            self._session = None

    def _run_joined(self, num_epochs: int, options: TrainingOptions, recovery: Recovery | None) -> TrainingSummary:
        """Prepare everything (data, network, checks, toolbox, state) before touching the disk, then train."""
        session = self._session
        set_seed(options.seed, deterministic=options.deterministic)
        train_data = self.train_data if session is None else distributed.rank_share(self.train_data, session.world)
        stream = BatchStream(train_data, num_workers=options.num_workers)
        frontends = None
        try:
            notes = self._prepare(stream, num_epochs, recovery)
            spec = self._record(num_epochs, recovery)
            root = self.root if recovery is None else _experiment_root(recovery.folder, spec)
            if self.is_main_process:
                frontends = open_frontends(options.track, root=root)
            folder = None if recovery is None else recovery.folder
            if recovery is None and (session is None or session.world.is_main):
                folder, spec = create_experiment_folder(self.root / self._folder_parts(), spec)
            if recovery is None and session is not None:  # one folder: rank 0's
                folder = distributed.broadcast_folder(folder, session)
                spec = replace(spec, experiment_id=folder.name)
            assert folder is not None
        except BaseException:
            stream.close()
            if frontends is not None:
                frontends.close(timeout=FRONTEND_CLOSE_SECONDS)
            raise
        self.spec = spec
        self.writer = ExperimentWriter(folder, folder.name, console=self.console,
                                       is_main_process=self.is_main_process, events=self.events, frontends=frontends)
        try:
            return self._train(folder, spec, root, num_epochs, recovery, notes, stream)
        finally:
            if frontends is not None:
                frontends.close(timeout=FRONTEND_CLOSE_SECONDS)

    def _train(self, folder: Path, spec: ExperimentSpec, root: Path, num_epochs: int, recovery: Recovery | None,
               notes: list[str], stream: BatchStream) -> TrainingSummary:
        """Announce the run, train its epochs and report how it ended."""
        writer, options = self.writer, self.options
        assert writer is not None
        if recovery is not None:
            writer.remove_stale_temporaries()
            if self.is_main_process:
                spec.write(folder)
        if recovery is not None and recovery.state is not None:
            writer.log(f"Resumed {folder} after epoch {self.tracker.epoch}; training to epoch {num_epochs}",
                       style="bold")
        elif recovery is not None:
            writer.log(f"No saved state in {folder}: restarting the run from scratch (seed {options.seed})")
        assert self.sanity is not None and self.toolbox is not None
        if recovery is None or recovery.state is None:
            writer.log(f"Experiment {folder}", style="bold")
        writer.emit("experiment_created", experiment_id=writer.experiment_id, folder=folder, config=spec.to_json(),
                    root=root, model_summary=str(distributed.unwrap_model(self.toolbox.model)),
                    num_parameters=self.sanity.num_trainable_params, num_macs=self.sanity.macs_per_sample)
        for note in notes:
            writer.log(note)
        if options.amp and self.device.type != "cuda":
            writer.log(f"Note: amp is ignored on {self.device.type} (mixed precision runs on CUDA only)")
        writer.show(sanity_table(self.sanity, str(self.device)))
        try:
            self._loop(num_epochs, stream)
        except BaseException as error:
            self._report_interruption(error)
            raise
        finally:
            stream.close()
        summary = self._summary(folder)
        writer.log(f"Done: best smoothed score {summary.best_score:.4f} at epoch {summary.best_epoch}; "
                   f"{folder}", style="bold green")
        writer.emit("experiment_completed", experiment_id=writer.experiment_id,
                    summary={**asdict(summary), "folder": str(folder)})
        return summary

    def _prepare(self, stream: BatchStream, num_epochs: int, recovery: Recovery | None) -> list[str]:
        """Peek a batch, build and check the network, build the toolbox and load the saved state; nothing is
        written. Returns the notes to log once the folder is open."""
        options = self.options
        state = recovery.state if recovery is not None else None
        if state is not None:
            done = int(state["epoch"])
            if num_epochs < done:
                raise ResumeError(f"the run already trained {done} epochs; ask for at least that many (got "
                                  f"{num_epochs})")
            stream.seek(int(state["stream_position"]))
        images, labels = self._to_device(stream.peek())
        if options.num_classes is None:
            self._options = options = replace(options, num_classes=self._infer_num_classes())
        self.patch_size = tuple(images.shape[2:])
        example_shape = tuple(images.shape[1:])
        if recovery is not None:
            self._check_recorded(recovery, example_shape)
        model = self.build_network(example_shape).to(self.device)
        if options.deep_supervision:
            set_deep_supervision(model, True)
        self.sanity = sanity_check(model, images, labels, num_classes=options.num_classes,
                                   deep_supervision=options.deep_supervision)
        session, notes = self._session, []
        if session is not None:
            model, notes = self._fit_for_ddp(model)
            options = self.options
        elif options.compile:
            model = self.compile_model(model)
        self.toolbox = self.build_toolbox(model, num_epochs)
        self.tracker, self.history = Tracker(), {}
        if state is not None:
            try:
                notes += self._load_state(state, num_epochs)
            except (RuntimeError, KeyError, ValueError) as error:
                assert recovery is not None
                raise ResumeError(f"the saved state of {recovery.folder} does not fit the network built now "
                                  f"({type(error).__name__}: {str(error).splitlines()[0]}); nothing was changed") \
                    from error
        if session is not None:  # every rank holds the same weights and state: DDP checks and broadcasts them
            wrapped = distributed.wrap(model, session)
            self.toolbox.model = self.compile_model(wrapped) if options.compile else wrapped
            notes.append(f"Data-parallel on {session.world.size} processes ({session.backend}): global batch "
                         f"{session.world.size} x the batch size")
        return notes

    def _fit_for_ddp(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        """SyncBatchNorm on GPUs, and no deep supervision head weighing 0 (the options, and so the record, get the
        weights used); returns the notes to log."""
        options, notes = self.options, []
        model, note = distributed.sync_batch_norm(model, self.device)
        notes += [note] if note else []
        assert self.sanity is not None
        weights = distributed.every_head_weighted(options.deep_supervision_weights, len(self.sanity.output_shapes)) \
            if options.deep_supervision else None
        if weights is not None:
            self._options = replace(options, deep_supervision_weights=weights)
            notes.append("Deep supervision weights " + ", ".join(f"{w:.3g}" for w in weights) + ": no head weighs 0 "
                         "under DDP (each parameter must receive a gradient)")
        return model, notes

    def _check_recorded(self, recovery: Recovery, example_shape: tuple[int, ...]) -> None:
        """Refuse to resume with data or classes other than the record's, naming what differs."""
        spec, problems = recovery.spec, []
        if tuple(example_shape) != spec.example_shape:
            problems.append(f"the batches are shaped {example_shape} (channels, patch) but the run trained on "
                            f"{spec.example_shape}")
        if self.options.num_classes != spec.num_classes:
            problems.append(f"{self.options.num_classes} classes now, {spec.num_classes} recorded")
        recorded_world, world = (spec.sampling or {}).get("world_size", 1), self._world_size()
        if recorded_world != world:
            problems.append(f"the run trained on {recorded_world} process(es) and this one has {world}: the global "
                            "batch and the data order would change (launch as many: torchrun "
                            f"--nproc_per_node={recorded_world})")
        if spec.data is not None:
            split = self._split()
            for name, now, recorded in (("training", split[0], spec.data.train_cases),
                                        ("validation", split[1], spec.data.val_cases)):
                if recorded and now and tuple(now) != tuple(recorded):
                    missing, extra = sorted(set(recorded) - set(now)), sorted(set(now) - set(recorded))
                    problems.append(f"the {name} cases differ from the recorded split (missing {missing[:5]}, "
                                    f"extra {extra[:5]})")
        if problems:
            raise ResumeError(f"cannot resume {recovery.folder}: " + "; ".join(problems) + ". Resume with the data "
                              "the run was started with (candy train --resume FOLDER restores it from the record)")

    def _split(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The case ids of the training and validation data, where they are case sources."""
        train, val = _case_source(self.train_data), self.val_data
        return (tuple(train.case_ids) if isinstance(train, CaseSource) else (),
                tuple(val.case_ids) if isinstance(val, CaseSource) else ())

    def _record(self, num_epochs: int, recovery: Recovery | None) -> ExperimentSpec:
        """The experiment's record: a new one, or the resumed one with its new length and resume time."""
        now = datetime.now().isoformat(timespec="seconds")
        if recovery is not None:
            return replace(recovery.spec.with_resume(num_epochs, now), options=self.options)
        options, description = self.options, self.describe_data()
        assert self.sanity is not None and options.num_classes is not None
        train, val = self._split()
        record = self.data_record or DataRecord()
        data = replace(record, train_cases=record.train_cases or train, val_cases=record.val_cases or val,
                       cache=record.cache or description.cache)
        sampling = self.train_data.settings() if isinstance(self.train_data, RandomROIDataset) else None
        if self._world_size() > 1:
            sampling = {**(sampling or {}), "world_size": self._world_size()}
        bundle = None
        if options.bundle is not None:
            plugin = get_plugin_manager().require(options.bundle)
            bundle = BundleRecord(options.bundle, plugin.distribution, plugin.version)
        return ExperimentSpec(
            experiment_id="", created=now, trainer=f"{type(self).__module__}.{type(self).__qualname__}",
            num_epochs=num_epochs, options=options, example_shape=tuple(self.sanity.input_shape[1:]),
            num_classes=options.num_classes, class_names=class_names_from_labels(description.labels),
            channel_names=dict(description.channel_names or {}), bundle=bundle, sampling=sampling, data=data,
            preprocessing_plan=description.plan, versions=_versions(),
            sanity=json.loads(json.dumps(asdict(self.sanity))))

    def _world_size(self) -> int:
        """Processes training this run together (1 without torchrun)."""
        return 1 if self._session is None else self._session.world.size

    def _folder_parts(self) -> Path:
        """``<dataset>/<bundle or trainer>[/fold_<k>]``: what the folder holds, readable without opening it (the
        dataset is the recorded dataset folder's name, else the data's own name, else ``data``)."""
        record, options = self.data_record, self.options
        dataset = Path(record.dataset).name if record is not None and record.dataset else \
            self.describe_data().name or "data"
        parts = Path(dataset) / (options.bundle or type(self).__name__)
        if record is not None and record.fold is not None:
            parts /= f"fold_{record.fold}"
        return parts

    def _report_interruption(self, error: BaseException) -> None:
        """Log and announce why the run stopped; a failing log (a full disk) never hides the original error."""
        writer = self.writer
        assert writer is not None
        saved = self._saved_epoch
        where = f"the last saved state is epoch {saved}" if saved else "no state was saved yet"
        description = f"{type(error).__name__}: {error}"
        try:
            writer.log(f"Interrupted during epoch {self._current_epoch} ({where}): {description}", style="red")
        except Exception as log_error:  # noqa: BLE001 - the original error is the one to report
            warnings.warn(f"could not write the log ({log_error}); {description}", ArtefactWarning, stacklevel=2)
        writer.emit("experiment_interrupted", experiment_id=writer.experiment_id, error=description)

    def _loop(self, num_epochs: int, stream: BatchStream) -> None:
        options, toolbox, writer = self.options, self.toolbox, self.writer
        assert toolbox is not None and writer is not None
        iterations = options.iterations_per_epoch or stream.pass_length  # in a distributed run: a rank's share
        durations = [d for d in self.history.get("epoch duration", []) if math.isfinite(d)]
        self._current_epoch = self.tracker.epoch + 1
        for epoch in range(self.tracker.epoch + 1, num_epochs + 1):
            if self.tracker.stopped_early:
                break
            self._current_epoch = epoch
            started = time.perf_counter()
            row: dict[str, Any] = {"learning rate": toolbox.optimizer.param_groups[0]["lr"]}
            row.update(self._train_epoch(epoch, num_epochs, stream, iterations))
            toolbox.scheduler.step()
            validation = None
            if self.val_data is not None and options.validate_every and (
                    epoch % options.validate_every == 0 or epoch == num_epochs):
                validation = self.validate(toolbox)
                row.update({f"val {k}": v for k, v in validation.mean_metrics().items()})
                row["val score"] = validation.score
                row["worst case"] = validation.worst.case_id if validation.worst else ""
            improved = self._update_tracker(epoch, validation)
            if validation is not None:
                row["val score (smoothed)"] = self.tracker.smoothed_score
            row["epoch duration"] = time.perf_counter() - started
            durations.append(row["epoch duration"])
            mean_duration = sum(durations) / len(durations)
            prediction = self._forecast(epoch, row)
            self._append_history(epoch, row)
            self.tracker.epoch = epoch
            last = epoch == num_epochs or self.tracker.stopped_early
            self._write_artefacts(epoch, improved, validation, details=last or epoch % options.plot_every == 0)
            writer.save_state(self._state(stream, num_epochs))
            self._saved_epoch = epoch
            best = self.tracker.best_score
            writer.emit("epoch_updated", experiment_id=writer.experiment_id, epoch=epoch, metrics=dict(row),
                        num_epochs=num_epochs, best_score=best if math.isfinite(best) else None,
                        remaining_seconds=mean_duration * (num_epochs - epoch))
            writer.show(epoch_table(epoch, num_epochs, row, remaining_seconds=mean_duration * (num_epochs - epoch),
                                    improved=improved, prediction=_describe(prediction, epoch, mean_duration,
                                                                            num_epochs)))
            if validation is not None:
                writer.show(validation_table(validation))
            if self.tracker.stopped_early:
                writer.log(f"Early stop: no improvement of the smoothed score for {options.early_stop_patience} "
                           f"validations (best {self.tracker.best_score:.4f} at epoch {self.tracker.best_epoch})")

    def _train_epoch(self, epoch: int, num_epochs: int, stream: BatchStream, iterations: int) -> dict[str, float]:
        toolbox, writer = self.toolbox, self.writer
        assert toolbox is not None and writer is not None
        toolbox.model.train()
        sums: dict[str, float] = {}
        with writer.progress(iterations, f"Epoch {epoch}/{num_epochs}") as advance:
            for _ in range(iterations):
                images, labels = self._to_device(stream.next())
                loss, metrics = self.train_step(images, labels, toolbox)
                for key, value in {**metrics, "loss": loss}.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                if self.is_main_process:  # the other ranks' silent advance() takes no text
                    advance(f"loss {loss:.4f}")
        if self._session is not None:  # the epoch's means over the global batch, the same on every rank
            sums = distributed.mean_over_ranks(sums, self._session)
        means = {("combined loss" if k == "loss" else k): v / iterations for k, v in sums.items()}
        return {"combined loss": means.pop("combined loss"), **means}

    def _update_tracker(self, epoch: int, validation: ValidationResult | None) -> bool:
        """Smooth the score, keep the best and count stale validations; True on a new best."""
        if validation is None:
            return False
        tracker, options = self.tracker, self.options
        tracker.smoothed_score = smooth_score(tracker.smoothed_score, validation.score, options.score_smoothing)
        improved = tracker.smoothed_score > tracker.best_score
        if improved:
            tracker.best_score, tracker.best_epoch, tracker.stale_validations = tracker.smoothed_score, epoch, 0
        else:
            tracker.stale_validations += 1
        patience = options.early_stop_patience
        tracker.stopped_early = patience is not None and tracker.stale_validations >= patience
        return improved

    def _forecast(self, epoch: int, row: dict[str, Any]) -> ScorePrediction | None:
        if "val score" not in row:
            return None
        past = self.history.get("epoch", [])
        scores = [*self.history.get("val score", [math.nan] * len(past)), row["val score"]]
        pairs = [(e, s) for e, s in zip([*past, epoch], scores, strict=True) if math.isfinite(s)]
        if len(pairs) < max(self.options.prediction_warmup, 1):
            return None
        epochs, values = [e for e, _ in pairs], [s for _, s in pairs]
        try:
            prediction = predict_score(values, epochs=epochs, bounds=self.score_bounds(),
                                       warmup=self.options.prediction_warmup)
        except ValueError:
            return None
        if prediction is not None:
            row["predicted max"], row["predicted epoch"] = prediction.max_score, prediction.epoch
        return prediction

    def _append_history(self, epoch: int, row: Mapping[str, Any]) -> None:
        """Column-wise history: new columns are back-filled with NaN, missing values are NaN."""
        done = len(self.history.get("epoch", []))
        self.history.setdefault("epoch", []).append(epoch)
        for key, value in row.items():
            self.history.setdefault(key, [math.nan] * done).append(value)
        for values in self.history.values():
            if len(values) == done:
                values.append(math.nan)

    def _write_artefacts(self, epoch: int, improved: bool, validation: ValidationResult | None, *,
                         details: bool) -> None:
        toolbox, writer, options = self.toolbox, self.writer, self.options
        assert toolbox is not None and writer is not None
        model = distributed.unwrap_model(toolbox.validation_model)
        info = {"epoch": epoch, "weights": "ema" if toolbox.ema is not None else "raw",
                "smoothed_score": self.tracker.smoothed_score, "score": self.history["val score"][-1]
                if "val score" in self.history else None}
        writer.save_weights(model, LATEST, info)
        if improved:
            writer.save_weights(model, BEST, info)
        writer.write_metrics(self.history)
        numeric = {k: v for k, v in self.history.items() if k != "worst case"}
        components = [k for k in numeric if k not in _NOT_COMPONENTS and not k.startswith("val ")
                      and not k.startswith("predicted")]
        writer.plot(numeric, components, smoothing=options.score_smoothing, details=details)
        worst = validation.worst if validation is not None else None
        if options.preview and worst is not None and worst.prediction is not None:
            image, label = self.val_data[worst.index]
            writer.save_preview(image.cpu(), label.cpu(), worst.prediction, worst.case_id, epoch,
                                class_names=self.class_names() or None)

    # ---- state ------------------------------------------------------------------------------------------------
    def _state(self, stream: BatchStream, num_epochs: int) -> dict[str, Any]:
        toolbox = self.toolbox
        assert toolbox is not None
        return {
            "epoch": self.tracker.epoch,
            "num_epochs": num_epochs,
            "stream_position": stream.position,
            "model": distributed.unwrap_model(toolbox.model).state_dict(),
            "ema": toolbox.ema.state_dict() if toolbox.ema is not None else None,
            "optimizer": toolbox.optimizer.state_dict(),
            "scheduler": toolbox.scheduler.state_dict(),
            "grad_scaler": toolbox.grad_scaler.state_dict() if toolbox.grad_scaler is not None else None,
            "tracker": asdict(self.tracker),
            "history": self.history,
            "rng": capture_rng_state(),
        }

    def _load_state(self, state: Mapping[str, Any], num_epochs: int) -> list[str]:
        """Put the saved state into the toolbox, tracker and RNGs; returns notes for the log."""
        toolbox = self.toolbox
        assert toolbox is not None
        notes = []
        distributed.unwrap_model(toolbox.model).load_state_dict(state["model"])
        if toolbox.ema is not None:
            if state["ema"] is not None:
                toolbox.ema.load_state_dict(state["ema"])
            else:
                toolbox.ema = self.build_ema(toolbox.model)
                notes.append("The saved run had no EMA: the average starts from the current weights")
        toolbox.optimizer.load_state_dict(state["optimizer"])
        toolbox.scheduler.load_state_dict(state["scheduler"])
        if toolbox.grad_scaler is not None and state["grad_scaler"] is not None:
            toolbox.grad_scaler.load_state_dict(state["grad_scaler"])
        scheduler = toolbox.scheduler
        if isinstance(scheduler, PolyLRScheduler) and num_epochs > scheduler.max_steps:
            continuous = scheduler.base(scheduler.last_epoch) > 0
            scheduler.extend(num_epochs, continuous=continuous)
            notes.append(f"Schedule extended to {num_epochs} epochs ("
                         f"{'continuing the decay' if continuous else 're-planned: the previous run had ended'}; "
                         f"lr now {scheduler.lr_at(scheduler.last_epoch):.3g})")
        self.tracker = Tracker(**state["tracker"])
        self._saved_epoch = self.tracker.epoch
        self.history = {k: list(v) for k, v in state["history"].items()}
        restore_rng_state(state["rng"])
        return notes

    def _summary(self, folder: Path) -> TrainingSummary:
        checkpoints = {name: str(folder / name) for name in (LATEST, BEST, STATE) if (folder / name).is_file()}
        return TrainingSummary(folder, self.tracker.epoch, self.tracker.best_score, self.tracker.best_epoch,
                               self.tracker.stopped_early, checkpoints)


_NOT_COMPONENTS = ("epoch", "learning rate", "epoch duration", "combined loss")


def _describe(prediction: ScorePrediction | None, epoch: int, seconds_per_epoch: float, num_epochs: int) -> str | None:
    """``max 0.853 at epoch 140 (ETC 1h 02m)``: the forecast, with its ETC capped at the run's end."""
    if prediction is None:
        return None
    eta = min(prediction.eta_seconds(epoch, seconds_per_epoch), seconds_per_epoch * (num_epochs - epoch))
    return f"max {prediction.max_score:.4f} at epoch {math.ceil(prediction.epoch)} (ETC {format_duration(eta)})"


def _case_source(train_data: Any) -> Any:
    """The dataset of whole cases behind the training batches (a RandomROIDataset's or a DataLoader's)."""
    return train_data.dataset if isinstance(train_data, RandomROIDataset | DataLoader) else train_data


def _checkpointed_epochs(folder: Path) -> int:
    """The epochs a folder's artefacts say were trained: its latest checkpoint's (else 0)."""
    sidecar = (folder / LATEST).with_suffix(".json")
    try:
        return int(json.loads(sidecar.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1 if (folder / LATEST).is_file() or (folder / BEST).is_file() else 0


def _experiment_root(folder: Path, spec: ExperimentSpec) -> Path:
    """The root a run's folder was created under: above ``<dataset>/<bundle>[/fold_<k>]/<timestamp>``."""
    levels = 3 + (spec.data is not None and spec.data.fold is not None)
    return folder.parents[levels - 1]


def _versions() -> dict[str, str | None]:
    """Versions of mipcandy, torch and Python."""
    try:
        core = metadata.version("mipcandy")
    except metadata.PackageNotFoundError:
        from mipcandy import __version__ as core
    return {"mipcandy": core, "torch": torch.__version__, "python": platform.python_version()}
