"""The options of one training run: the single source of their defaults, and what ``config.json`` records.

A run's options are ``TrainingOptions`` with some fields replaced: ``trainer.train(num_epochs, ema=True)`` for one
run, or ``default_options = TrainingOptions(ema=True)`` on a trainer subclass for every run of that class. The
resolved options are the trainer's read-only ``trainer.options`` and are recorded in the experiment's
:class:`~mipcandy.training.spec.ExperimentSpec`, so a resumed or predicted run reads exactly what trained.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

SCORES = ("dice", "negative_loss")
AMP_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class TrainingOptions:
    """Every setting of a run, with nnU-Net's defaults where nnU-Net has one.

    ``num_classes``: output channels (``None``: the number of labels of the dataset; 1 means one sigmoid channel).
    ``deep_supervision``: train every decoder head (the network implements ``DeepSupervisedNetwork``), weighted by
    ``deep_supervision_weights`` (full resolution first; ``None``: nnU-Net's ``1/2^i`` with the lowest resolution
    at 0, sized from the network's outputs). ``include_background``: the background channel takes part in the Dice
    of a multi-class loss (nnU-Net: off). ``bundle``: the installed bundle that builds the network (and answers
    ``build_optimizer``, ``build_scheduler`` and ``backward`` where it implements them), ``bundle_options`` its
    JSON options. ``iterations_per_epoch``: optimizer steps per epoch (``None``: one pass over the loader).
    ``validate_every``: epochs between validations (0: never). ``early_stop_patience``: validations without
    improvement of the smoothed score before stopping (``None``: off). ``seed``: ``None`` draws one, which is
    recorded. ``ema``: validate and checkpoint an exponential moving average of the weights. ``amp``: autocast on
    CUDA (ignored elsewhere). ``grad_clip``: gradient-norm clip after unscaling (nnU-Net: 12). ``optimizer_options``
    override the optimizer's defaults (the core's SGD reads lr, momentum, weight_decay, nesterov). ``score``: what
    validation maximises. ``plot_every``: epochs between the detail plots. ``track``: tracking frontends to send
    the run's events to (``mlflow``, ``wandb``...). ``note``: free text for people and frontends.
    """

    num_classes: int | None = None
    deep_supervision: bool = False
    deep_supervision_weights: tuple[float, ...] | None = None
    include_background: bool = False
    bundle: str | None = None
    bundle_options: Mapping[str, Any] = field(default_factory=dict)
    iterations_per_epoch: int | None = 250
    validate_every: int = 1
    early_stop_patience: int | None = None
    seed: int | None = None
    deterministic: bool = False
    ema: bool = False
    ema_decay: float = 0.999
    amp: bool = False
    amp_dtype: str = "float16"
    compile: bool = False
    grad_clip: float | None = 12.0
    optimizer_options: Mapping[str, Any] = field(default_factory=dict)
    score: str = "dice"
    score_smoothing: float = 0.9
    prediction_warmup: int = 20
    num_workers: int = 0
    sliding_window_overlap: float = 0.5
    sliding_window_batch_size: int = 4
    preview: bool = True
    plot_every: int = 10
    track: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle_options", dict(self.bundle_options or {}))
        object.__setattr__(self, "optimizer_options", dict(self.optimizer_options or {}))
        object.__setattr__(self, "track", tuple(self.track))
        if self.deep_supervision_weights is not None:
            object.__setattr__(self, "deep_supervision_weights", tuple(float(w) for w in self.deep_supervision_weights))
        problems = self._problems()
        if problems:
            raise ValueError("invalid training options: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.num_classes is not None and self.num_classes < 1:
            problems.append(f"num_classes must be >= 1, got {self.num_classes}")
        weights = self.deep_supervision_weights
        if weights is not None and (not weights or any(w < 0 for w in weights)):
            problems.append(f"deep_supervision_weights must be non-negative numbers, got {list(weights)}")
        if self.iterations_per_epoch is not None and self.iterations_per_epoch < 1:
            problems.append(f"iterations_per_epoch must be >= 1 (None: one pass), got {self.iterations_per_epoch}")
        if self.validate_every < 0:
            problems.append(f"validate_every must be >= 0 (0 turns validation off), got {self.validate_every}")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            problems.append(f"early_stop_patience must be >= 1 or None (off), got {self.early_stop_patience}")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.amp_dtype not in AMP_DTYPES:
            problems.append(f"amp_dtype must be one of {AMP_DTYPES}, got {self.amp_dtype!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            problems.append(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.score not in SCORES:
            problems.append(f"score must be one of {SCORES}, got {self.score!r}")
        if not 0 <= self.score_smoothing < 1:
            problems.append(f"score_smoothing must lie in [0, 1), got {self.score_smoothing}")
        if self.num_workers < 0 or self.sliding_window_batch_size < 1 or not 0 <= self.sliding_window_overlap < 1:
            problems.append("num_workers must be >= 0, sliding_window_batch_size >= 1 and sliding_window_overlap in "
                            f"[0, 1), got {self.num_workers}, {self.sliding_window_batch_size} and "
                            f"{self.sliding_window_overlap}")
        if self.plot_every < 1:
            problems.append(f"plot_every must be >= 1, got {self.plot_every}")
        for name in ("bundle_options", "optimizer_options"):
            try:
                json.dumps(getattr(self, name), allow_nan=False)
            except (TypeError, ValueError) as error:
                problems.append(f"{name} must hold JSON values only (they are recorded in config.json and read back "
                                f"to resume and predict): {error}")
        return problems

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names."""
        return tuple(f.name for f in fields(cls))

    def resolve(self, overrides: Mapping[str, Any]) -> TrainingOptions:
        """These options with ``overrides`` applied, and a drawn seed where none was given (recorded with the run).

        Unknown names raise ``TypeError`` listing the options.
        """
        resolved = replace(self, **_known(overrides))
        if resolved.seed is None:
            resolved = replace(resolved, seed=secrets.randbelow(2 ** 31))
        return resolved

    def changed(self, other: TrainingOptions) -> dict[str, tuple[Any, Any]]:
        """``{name: (self's value, other's value)}`` for every option that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {name: (mine[name], theirs[name]) for name in self.names() if mine[name] != theirs[name]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingOptions:
        """Options as :meth:`to_dict` wrote them; unknown names raise ``TypeError``, bad values ``ValueError``."""
        return replace(cls(), **_known(values))


def _known(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(TrainingOptions.names()))
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; the options are {sorted(TrainingOptions.names())}")
    return dict(values)
