"""The training lifecycle: build once, check, train for epochs of fixed length, validate, checkpoint, resume.

A run: seed everything, take the first real batch, build the network once, sanity-check it on that batch (shapes,
parameters, MACs), build the toolbox (optimizer, poly schedule, criterion, weight EMA, gradient scaler), then per
epoch: ``iterations_per_epoch`` optimizer steps (zero grad, ``backward`` under autocast, unscale, clip, step, EMA
update), one scheduler step, validation on whole cases (every ``validate_every`` epochs), the smoothed score and
best checkpoint, the artefacts and finally the full training state, written atomically. ``recover_from(folder)``
and ``continue_training()`` resume at the next epoch with every RNG, the data position and all counters restored.

With a ``bundle``, ``build_network``, ``build_optimizer`` and ``backward`` go to that bundle through the plugin
manager (the core answers where the bundle does not), and the worst-case preview is broadcast to every plugin.
"""
from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Self

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from mipcandy import defaults
from mipcandy.common.optim import ExponentialMovingAverage, PolyLRScheduler
from mipcandy.common.regressions import ScorePrediction, predict_score
from mipcandy.data.roi import RandomROIDataset
from mipcandy.layer import WithNetwork, unwrap_compiled
from mipcandy.training.checkpoint import load_state
from mipcandy.training.console import epoch_table, format_duration, sanity_table, validation_table
from mipcandy.training.experiment import BEST, LATEST, STATE, ExperimentWriter, new_experiment_folder
from mipcandy.training.options import TrainingOptions
from mipcandy.training.sanity import SanityCheckResult, sanity_check
from mipcandy.training.seed import capture_rng_state, restore_rng_state, set_seed
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
    (``None`` turns validation off). The class attributes below are the defaults of every option;
    ``train(num_epochs, **options)`` overrides them for one run, and subclasses by assignment.
    """

    num_classes: int | None = None  # output channels; None: the number of labels of the dataset
    deep_supervision: bool = False
    bundle: str | None = None  # build the network (and optimizer, backward) with this bundle
    bundle_options: Mapping[str, Any] = {}
    iterations_per_epoch: int | None = 250  # None: one pass over the training loader
    validate_every: int = 1  # 0: never
    early_stop_patience: int | None = None  # validations without improvement of the smoothed score; None: off
    seed: int | None = None  # None: a random seed, recorded in config.json
    deterministic: bool = False
    ema: bool = False  # validate and checkpoint an exponential moving average of the weights
    ema_decay: float = 0.999
    amp: bool = False  # autocast (+ GradScaler for float16) on CUDA; ignored elsewhere
    amp_dtype: str = "float16"
    compile: bool = False
    grad_clip: float | None = None
    optimizer_options: Mapping[str, Any] = {}  # lr, momentum, weight_decay, nesterov for the default SGD
    score: str = "dice"  # or "negative_loss"
    score_smoothing: float = 0.9
    prediction_warmup: int = 20
    num_workers: int = 0
    sliding_window_overlap: float = 0.5
    sliding_window_batch_size: int = 4
    preview: bool = True
    plot_every: int = 10  # per-loss and per-class plots every N epochs (and at the end); progress.png every epoch
    note: str = ""

    def __init__(self, root: str | Path, train_data: RandomROIDataset | DataLoader, val_data: Any = None, *,
                 device: str | torch.device = "cpu", console: Console | None = None, is_main_process: bool = True,
                 events: bool = True) -> None:
        super().__init__(device)
        self.root = Path(root)
        self.train_data = train_data
        self.val_data = val_data
        self.console = console if console is not None else Console()
        self.is_main_process = is_main_process
        self.events = events
        self.options: TrainingOptions | None = None
        self.writer: ExperimentWriter | None = None
        self.toolbox: TrainerToolbox | None = None
        self.tracker = Tracker()
        self.history: dict[str, list[Any]] = {}
        self.patch_size: tuple[int, ...] = ()
        self.sanity: SanityCheckResult | None = None
        self._recovery: tuple[Path, int, TrainingOptions, dict[str, Any] | None] | None = None

    # ---- public entry points ----------------------------------------------------------------------------------
    def train(self, num_epochs: int, **options: Any) -> TrainingSummary:
        """Train for ``num_epochs`` epochs in a new experiment folder; ``options`` override the class defaults."""
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
        resolved = TrainingOptions.resolve(self, options)
        folder = new_experiment_folder(self.root, type(self).__name__)
        return self._run(folder, num_epochs, resolved, None, fresh=True)

    __call__ = train

    def recover_from(self, folder: str | Path, **overrides: Any) -> Self:
        """Load an experiment folder's options and last saved state; ``continue_training`` then resumes it.

        ``overrides`` replace stored options (e.g. ``bundle_options`` that JSON could not hold). A run killed
        before its first state was saved restarts from scratch in the same folder, with the same seed.
        """
        folder = Path(folder)
        config = ExperimentWriter(folder, folder.name).read_config()
        stored = {**config["options"], **overrides}
        options = TrainingOptions.resolve(self, {k: v for k, v in stored.items() if k in TrainingOptions.names()})
        state = load_state(folder / STATE) if (folder / STATE).is_file() else None
        self._recovery = (folder, int(config["num_epochs"]), options, state)
        return self

    def continue_training(self, num_epochs: int | None = None) -> TrainingSummary:
        """Resume the recovered run at its next epoch, up to ``num_epochs`` in total (default: as planned).

        More epochs than planned stretch the poly schedule to the new end (see ``PolyLRScheduler.extend``).
        """
        if self._recovery is None:
            raise RuntimeError("call recover_from(folder) before continue_training()")
        folder, planned, options, state = self._recovery
        self._recovery = None
        return self._run(folder, planned if num_epochs is None else num_epochs, options, state, fresh=False)

    @property
    def experiment_folder(self) -> Path | None:
        return None if self.writer is None else self.writer.folder

    # ---- builders (override, or let a bundle answer) ----------------------------------------------------------
    def build_network(self, example_shape: Sequence[int]) -> nn.Module:
        """The network for one input ``(C, *patch)``; by default the selected bundle builds it."""
        options = self._options()
        if options.bundle is None:
            raise NotImplementedError(f"{type(self).__name__} has no network: implement build_network(example_shape) "
                                      "or select a bundle (bundle='unet')")
        from mipcandy.plugins import get_plugin_manager

        bundle_options = dict(options.bundle_options)
        if options.deep_supervision:
            bundle_options.setdefault("deep_supervision", True)
        return get_plugin_manager().call(options.bundle, "build_network", example_shape=tuple(example_shape),
                                         num_classes=options.num_classes, options=bundle_options)

    def build_optimizer(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        """nnU-Net's SGD (the core default), or the bundle's optimizer."""
        options = self._options()
        if options.bundle is None:
            return defaults.build_optimizer(params=params, options=options.optimizer_options)
        from mipcandy.plugins import get_plugin_manager

        return get_plugin_manager().call(options.bundle, "build_optimizer", params=params,
                                         options=options.optimizer_options)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, num_epochs: int) -> Any:
        """Poly decay (exponent 0.9) from the optimizer's lr to 0, stepped once per epoch as nnU-Net does."""
        return PolyLRScheduler(optimizer, optimizer.param_groups[0]["lr"], num_epochs)

    def build_criterion(self) -> nn.Module:
        """The loss: ``criterion(outputs, labels) -> (loss, {name: float})``."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_criterion()")

    def build_ema(self, model: nn.Module) -> ExponentialMovingAverage:
        """A true exponential moving average of the weights (decay ``ema_decay``)."""
        return ExponentialMovingAverage(model, self._options().ema_decay)

    def build_grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for float16 autocast on CUDA; None otherwise (bfloat16 needs no scaling)."""
        options = self._options()
        if options.amp and self.device.type == "cuda" and options.amp_dtype == "float16":
            return torch.amp.GradScaler("cuda")
        return None

    def build_toolbox(self, model: nn.Module, num_epochs: int) -> TrainerToolbox:
        """Optimizer, scheduler, criterion, EMA and scaler around an already built ``model``."""
        optimizer = self.build_optimizer([p for p in model.parameters() if p.requires_grad])
        return TrainerToolbox(model, optimizer, self.build_scheduler(optimizer, num_epochs),
                              self.build_criterion().to(self.device),
                              self.build_ema(model) if self._options().ema else None, self.build_grad_scaler())

    # ---- one training step --------------------------------------------------------------------------------------
    def backward(self, images: torch.Tensor, labels: torch.Tensor, toolbox: TrainerToolbox) -> tuple[float, dict]:
        """Forward, loss and ``loss.backward()`` (scaled when there is a GradScaler); the bundle's if it has one."""
        bundle = self._options().bundle
        if bundle is None:
            return defaults.backward(images=images, labels=labels, toolbox=toolbox)
        from mipcandy.plugins import get_plugin_manager

        return get_plugin_manager().call(bundle, "backward", images=images, labels=labels, toolbox=toolbox)

    def autocast(self) -> Any:
        """The autocast context of forward passes (mixed precision on CUDA only)."""
        options = self._options()
        if options.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=getattr(torch, options.amp_dtype))
        return nullcontext()

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, toolbox: TrainerToolbox) -> tuple[float, dict]:
        """Zero the gradients, back-propagate, unscale, clip, step the optimizer and update the EMA."""
        toolbox.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, metrics = self.backward(images, labels, toolbox)
        scaler, clip = toolbox.grad_scaler, self._options().grad_clip
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
        """Eval mode, and deep supervision off where the network has that switch; restored afterwards."""
        was_training, switch = model.training, getattr(model, "deep_supervision", None)
        model.eval()
        if isinstance(switch, bool):
            model.deep_supervision = False
        try:
            yield model
        finally:
            model.train(was_training)
            if isinstance(switch, bool):
                model.deep_supervision = switch

    def validate(self, toolbox: TrainerToolbox) -> ValidationResult:
        """Every validation case through ``validate_case``; only the worst case keeps its prediction."""
        result = ValidationResult()
        assert self.writer is not None
        with self.validation_mode(toolbox.validation_model), torch.no_grad(), \
                self.writer.progress(len(self.val_data), "Validation") as advance:
            for i in range(len(self.val_data)):
                image, label = self.val_data[i]
                case_id = self.val_data.case_id(i) if hasattr(self.val_data, "case_id") else str(i)
                case = self.validate_case(case_id, image.to(self.device), label.to(self.device), toolbox)
                case.index = i
                result.add(case)
                advance()
        return result

    def score_bounds(self) -> tuple[float, float]:
        """The range of the validation score, for the forecast."""
        return (0.0, 1.0) if self._options().score == "dice" else (-math.inf, 0.0)

    def class_names(self) -> dict[int, str]:
        """Class id to name, from the dataset's ``labels`` (``{name: id}``) when it has them."""
        labels = _dataset_labels(self.val_data) or _dataset_labels(self.train_data) or {}
        return {int(v): str(k) for k, v in labels.items()}

    # ---- the run ----------------------------------------------------------------------------------------------
    def _options(self) -> TrainingOptions:
        if self.options is None:
            raise RuntimeError("the trainer has no run options yet: call train() or recover_from()")
        return self.options

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

    def _run(self, folder: Path, num_epochs: int, options: TrainingOptions, state: dict[str, Any] | None, *,
             fresh: bool) -> TrainingSummary:
        self.options = options
        self.writer = writer = ExperimentWriter(folder, folder.name, console=self.console,
                                                is_main_process=self.is_main_process, events=self.events)
        writer.remove_stale_temporaries()
        set_seed(options.seed, deterministic=options.deterministic)
        stream = BatchStream(self.train_data, num_workers=options.num_workers)
        if state is not None:
            stream.seek(int(state["stream_position"]))
        images, labels = self._to_device(stream.peek())
        if options.num_classes is None:
            self.options = options = replace(options, num_classes=self._infer_num_classes())
        self.patch_size = tuple(images.shape[2:])
        model = self.build_network(tuple(images.shape[1:])).to(self.device)
        self.sanity = sanity_check(model, images, labels, num_classes=options.num_classes,
                                   deep_supervision=options.deep_supervision)
        if options.compile:
            model = self.compile_model(model)
        self.toolbox = self.build_toolbox(model, num_epochs)
        self.tracker, self.history = Tracker(), {}
        config = self._config(folder, num_epochs, writer.read_config() if not fresh else None)
        writer.write_config(config)
        if state is not None:
            self._load_state(state, num_epochs)
            writer.log(f"Resumed {folder} after epoch {self.tracker.epoch}; training to epoch {num_epochs}",
                       style="bold")
        elif not fresh:
            writer.log(f"No saved state in {folder}: restarting the run from scratch (seed {options.seed})")
        if fresh or state is None:
            writer.log(f"Experiment {folder}", style="bold")
            writer.emit("experiment_created", experiment_id=writer.experiment_id, folder=folder, config=config)
        if options.amp and self.device.type != "cuda":
            writer.log(f"Note: amp is ignored on {self.device.type} (mixed precision runs on CUDA only)")
        writer.show(sanity_table(self.sanity, str(self.device)))
        try:
            self._loop(num_epochs, stream)
        except BaseException as error:
            writer.log(f"Interrupted after epoch {self.tracker.epoch}: {type(error).__name__}: {error}", style="red")
            writer.emit("experiment_interrupted", experiment_id=writer.experiment_id,
                        error=f"{type(error).__name__}: {error}")
            raise
        finally:
            stream.close()
        summary = self._summary(folder)
        writer.log(f"Done: best smoothed score {summary.best_score:.4f} at epoch {summary.best_epoch}; "
                   f"{folder}", style="bold green")
        writer.emit("experiment_completed", experiment_id=writer.experiment_id,
                    summary={**asdict(summary), "folder": str(folder)})
        return summary

    def _config(self, folder: Path, num_epochs: int, previous: dict[str, Any] | None) -> dict[str, Any]:
        options = self._options()
        config = {
            "experiment_id": folder.name,
            "trainer": f"{type(self).__module__}.{type(self).__qualname__}",
            "created": previous["created"] if previous else datetime.now().isoformat(timespec="seconds"),
            "num_epochs": num_epochs,
            "options": options.to_dict(),
            "example_shape": list(self.sanity.input_shape[1:]) if self.sanity else None,
            "device": str(self.device),
            "train_data": repr(self.train_data),
            "val_data": repr(self.val_data),
            "versions": _versions(options.bundle),
            "sanity": asdict(self.sanity) if self.sanity else None,
            **self._data_description(),
        }
        if previous:
            config["resumed"] = [*previous.get("resumed", []), datetime.now().isoformat(timespec="seconds")]
        return config

    def _data_description(self) -> dict[str, Any]:
        """What prediction needs to treat new images as the training data were: the preprocessing plan (when the
        data came from a preprocessing cache), and the class and channel names."""
        dataset = getattr(self.train_data, "dataset", self.train_data)
        sources = (dataset, self.val_data)
        plan = next((p for p in (getattr(d, "plan", None) for d in sources) if p is not None), None)
        labels = next((lb for lb in (getattr(d, "labels", None) for d in sources) if lb), None)
        channels = next((c for c in (getattr(d, "channel_names", None) for d in sources) if c), None)
        return {"preprocessing_plan": plan.to_dict() if plan is not None else None,
                "labels": dict(labels) if labels else None, "channel_names": dict(channels) if channels else None}

    def _loop(self, num_epochs: int, stream: BatchStream) -> None:
        options, toolbox, writer = self._options(), self.toolbox, self.writer
        assert toolbox is not None and writer is not None
        iterations = options.iterations_per_epoch or stream.pass_length
        durations = [d for d in self.history.get("epoch duration", []) if math.isfinite(d)]
        for epoch in range(self.tracker.epoch + 1, num_epochs + 1):
            if self.tracker.stopped_early:
                break
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
            writer.emit("epoch_updated", experiment_id=writer.experiment_id, epoch=epoch, metrics=dict(row))
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
                advance(f"loss {loss:.4f}")
        means = {("combined loss" if k == "loss" else k): v / iterations for k, v in sums.items()}
        return {"combined loss": means.pop("combined loss"), **means}

    def _update_tracker(self, epoch: int, validation: ValidationResult | None) -> bool:
        """Smooth the score, keep the best and count stale validations; True on a new best."""
        if validation is None:
            return False
        tracker, options = self.tracker, self._options()
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
        if len(pairs) < max(self._options().prediction_warmup, 1):
            return None
        epochs, values = [e for e, _ in pairs], [s for _, s in pairs]
        try:
            prediction = predict_score(values, epochs=epochs, bounds=self.score_bounds(),
                                       warmup=self._options().prediction_warmup)
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
        toolbox, writer, options = self.toolbox, self.writer, self._options()
        assert toolbox is not None and writer is not None
        model = toolbox.validation_model
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
            "model": unwrap_compiled(toolbox.model).state_dict(),
            "ema": toolbox.ema.state_dict() if toolbox.ema is not None else None,
            "optimizer": toolbox.optimizer.state_dict(),
            "scheduler": toolbox.scheduler.state_dict(),
            "grad_scaler": toolbox.grad_scaler.state_dict() if toolbox.grad_scaler is not None else None,
            "tracker": asdict(self.tracker),
            "history": self.history,
            "rng": capture_rng_state(),
        }

    def _load_state(self, state: Mapping[str, Any], num_epochs: int) -> None:
        toolbox, writer = self.toolbox, self.writer
        assert toolbox is not None and writer is not None
        done = int(state["epoch"])
        if num_epochs < done:
            raise ValueError(f"the run already trained {done} epochs; ask for at least that many (got {num_epochs})")
        unwrap_compiled(toolbox.model).load_state_dict(state["model"])
        if toolbox.ema is not None:
            if state["ema"] is not None:
                toolbox.ema.load_state_dict(state["ema"])
            else:
                toolbox.ema = self.build_ema(toolbox.model)
                writer.log("The saved run had no EMA: the average starts from the current weights")
        toolbox.optimizer.load_state_dict(state["optimizer"])
        toolbox.scheduler.load_state_dict(state["scheduler"])
        if toolbox.grad_scaler is not None and state["grad_scaler"] is not None:
            toolbox.grad_scaler.load_state_dict(state["grad_scaler"])
        horizon = getattr(toolbox.scheduler, "max_steps", None)
        if horizon is not None and num_epochs > horizon:
            self._extend_schedule(toolbox.scheduler, num_epochs)
        self.tracker = Tracker(**state["tracker"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        restore_rng_state(state["rng"])

    def _extend_schedule(self, scheduler: PolyLRScheduler, num_epochs: int) -> None:
        """Stretch the rest of the poly decay to ``num_epochs``; re-plan it when it had already reached 0."""
        assert self.writer is not None
        continuous = scheduler.base(scheduler.last_epoch) > 0
        scheduler.extend(num_epochs, continuous=continuous)
        self.writer.log(f"Schedule extended to {num_epochs} epochs ("
                        f"{'continuing the decay' if continuous else 're-planned: the previous run had ended'}; "
                        f"lr now {scheduler.lr_at(scheduler.last_epoch):.3g})")

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


def _dataset_labels(data: Any) -> Mapping[str, int] | None:
    """The ``{name: id}`` labels of a dataset, a RandomROIDataset's dataset or a DataLoader's dataset."""
    for candidate in (data, getattr(data, "dataset", None), getattr(getattr(data, "dataset", None), "dataset", None),
                      getattr(getattr(data, "annotations", None), "labels", None)):
        labels = candidate if isinstance(candidate, Mapping) else getattr(candidate, "labels", None)
        if isinstance(labels, Mapping) and labels:
            return labels
    return None


def _versions(bundle: str | None) -> dict[str, str | None]:
    """Versions of mipcandy, torch, Python and the bundle's distribution."""
    try:
        core = metadata.version("mipcandy")
    except metadata.PackageNotFoundError:
        from mipcandy import __version__ as core
    versions: dict[str, str | None] = {"mipcandy": core, "torch": torch.__version__,
                                       "python": platform.python_version()}
    if bundle is not None:
        from mipcandy.plugins import get_plugin_manager

        record = get_plugin_manager().require(bundle)
        versions[f"bundle {bundle}"] = f"{record.distribution} {record.version}"
    return versions
