"""One frontend made of several: every event goes to each member in turn."""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mipcandy.frontend.protocol import Frontend, FrontendError
from mipcandy.hookspecs import EVENT_HOOKS, hookimpl


class HybridFrontend:
    """Fans every event out to its members; one member's failure does not keep the event from the others."""

    def __init__(self, members: Sequence[Frontend]) -> None:
        for member in members:
            if not isinstance(member, Frontend):
                raise TypeError(f"create_hybrid_frontend: {member!r} is not a Frontend: it must have the methods "
                                f"{', '.join(EVENT_HOOKS)}")
        self.members = tuple(members)
        # each member receives the parameters its method names (a method may take **kwargs to get all of them)
        self._accepts = {(index, hook): _parameters(getattr(member, hook))
                         for index, member in enumerate(self.members) for hook in EVENT_HOOKS}

    def _fan_out(self, hook: str, kwargs: dict[str, Any]) -> None:
        errors = []
        for index, member in enumerate(self.members):
            accepted = self._accepts[index, hook]
            try:
                getattr(member, hook)(**(kwargs if accepted is None else {k: kwargs[k] for k in accepted}))
            except Exception as error:
                errors.append(f"{type(member).__name__}: {type(error).__name__}: {error}")
        if errors:
            raise FrontendError(f"{len(errors)} of {len(self.members)} members failed in {hook}: {'; '.join(errors)}")

    @hookimpl
    def tracking_opened(self, root: Path) -> None:
        self._fan_out("tracking_opened", {"root": root})

    @hookimpl
    def experiment_created(self, experiment_id: str, folder: Path, config: Mapping[str, Any], root: Path | None,
                           model_summary: str | None, num_parameters: int | None, num_macs: int | None) -> None:
        self._fan_out("experiment_created", {"experiment_id": experiment_id, "folder": folder, "config": config,
                                             "root": root, "model_summary": model_summary,
                                             "num_parameters": num_parameters, "num_macs": num_macs})

    @hookimpl
    def epoch_updated(self, experiment_id: str, epoch: int, metrics: Mapping[str, float], num_epochs: int | None,
                      best_score: float | None, remaining_seconds: float | None) -> None:
        self._fan_out("epoch_updated", {"experiment_id": experiment_id, "epoch": epoch, "metrics": metrics,
                                        "num_epochs": num_epochs, "best_score": best_score,
                                        "remaining_seconds": remaining_seconds})

    @hookimpl
    def preview_saved(self, experiment_id: str, epoch: int, paths: Sequence[Path]) -> None:
        self._fan_out("preview_saved", {"experiment_id": experiment_id, "epoch": epoch, "paths": paths})

    @hookimpl
    def experiment_completed(self, experiment_id: str, summary: Mapping[str, Any]) -> None:
        self._fan_out("experiment_completed", {"experiment_id": experiment_id, "summary": summary})

    @hookimpl
    def experiment_interrupted(self, experiment_id: str, error: str) -> None:
        self._fan_out("experiment_interrupted", {"experiment_id": experiment_id, "error": error})


def _parameters(method: Any) -> tuple[str, ...] | None:
    """The keyword names ``method`` takes, or ``None`` when it takes ``**kwargs``."""
    parameters = inspect.signature(method).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters)


def create_hybrid_frontend(*frontends: Frontend) -> HybridFrontend:
    """One frontend that forwards every event to each of ``frontends`` (instances), in order.

    Select it like any other after ``register_frontend(create_hybrid_frontend(a, b), "team")``; installed frontends
    are combined more simply by naming several (``--track mlflow,notion``), which also gives each its own queue.
    """
    if not frontends:
        raise TypeError("create_hybrid_frontend needs at least one frontend")
    return HybridFrontend(frontends)
