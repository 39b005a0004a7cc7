"""The resolved options of one training run (what ``config.json`` records and recovery reads back).

Defaults live on the trainer class as attributes of the same names, so a subclass changes a default by
assigning an attribute (``class MyTrainer(SegmentationTrainer): ema = True``) and one run changes it through
``train(num_epochs, ema=True)``.
"""
from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

SCORES = ("dice", "negative_loss")
AMP_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class TrainingOptions:
    """Every setting of a run; see :class:`mipcandy.training.Trainer` for what each one does."""

    num_classes: int | None
    deep_supervision: bool
    bundle: str | None
    bundle_options: dict[str, Any]
    iterations_per_epoch: int | None
    validate_every: int
    early_stop_patience: int | None
    seed: int
    deterministic: bool
    ema: bool
    ema_decay: float
    amp: bool
    amp_dtype: str
    compile: bool
    grad_clip: float | None
    optimizer_options: dict[str, Any]
    score: str
    score_smoothing: float
    prediction_warmup: int
    num_workers: int
    sliding_window_overlap: float
    sliding_window_batch_size: int
    preview: bool
    plot_every: int
    note: str = field(default="")

    def __post_init__(self) -> None:
        problems = []
        if self.num_classes is not None and self.num_classes < 1:
            problems.append(f"num_classes must be >= 1, got {self.num_classes}")
        if self.iterations_per_epoch is not None and self.iterations_per_epoch < 1:
            problems.append(f"iterations_per_epoch must be >= 1 (None: one pass), got "
                            f"{self.iterations_per_epoch}")
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
        if problems:
            raise ValueError("invalid training options: " + "; ".join(problems))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names (also the trainer's class attributes holding their defaults)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def resolve(cls, defaults: Any, overrides: dict[str, Any]) -> TrainingOptions:
        """Options from ``overrides``, falling back to the attributes of ``defaults`` (a trainer).

        A ``seed`` of ``None`` draws a random one, which the returned options (and so ``config.json``) record.
        """
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; the options are {sorted(cls.names())}")
        values = {name: overrides[name] if name in overrides else getattr(defaults, name) for name in cls.names()}
        if values["seed"] is None:
            values["seed"] = secrets.randbelow(2 ** 31)
        values["bundle_options"] = dict(values["bundle_options"] or {})
        values["optimizer_options"] = dict(values["optimizer_options"] or {})
        return cls(**values)

    def with_bundle_options(self, **options: Any) -> TrainingOptions:
        """A copy with ``options`` added to ``bundle_options`` (e.g. a topology planned from the patch)."""
        return replace(self, bundle_options={**self.bundle_options, **options})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
