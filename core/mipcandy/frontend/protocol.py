"""What a tracking frontend is: an object answering the experiment events of :mod:`mipcandy.hookspecs`.

A frontend is a pluggy plugin like a bundle: its event methods carry :data:`mipcandy.hookimpl`, and an entry point in
the group ``mipcandy.frontends`` names it (``mlflow = "mipcandy.frontend.mlflow_frontend:plugin"``). A plugin may
implement any subset of the events and ask for any subset of their parameters; :class:`Frontend` is the whole
interface, which :func:`~mipcandy.frontend.hybrid.create_hybrid_frontend` requires of its members and the shipped
frontends implement. Events reach a frontend on its own worker thread (see :mod:`mipcandy.frontend.dispatch`), one
at a time and in order, so an implementation needs no locking of its own.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class FrontendError(RuntimeError):
    """A frontend could not handle an event (its server refused, its run is missing); training goes on."""


@runtime_checkable
class Frontend(Protocol):
    """Every experiment event, keyword arguments only (see :mod:`mipcandy.hookspecs` for their meaning)."""

    def tracking_opened(self, *, root: Path) -> None:
        """Check what the frontend needs (package, secrets) before the run writes anything; raise to refuse."""
        ...

    def experiment_created(self, *, experiment_id: str, folder: Path, config: Mapping[str, Any], root: Path | None,
                           model_summary: str | None, num_parameters: int | None, num_macs: int | None) -> None:
        """Open (or reopen, on resume) the run of ``experiment_id``."""
        ...

    def epoch_updated(self, *, experiment_id: str, epoch: int, metrics: Mapping[str, float], num_epochs: int | None,
                      best_score: float | None, remaining_seconds: float | None) -> None:
        """Record one epoch's values."""
        ...

    def preview_saved(self, *, experiment_id: str, epoch: int, paths: Sequence[Path]) -> None:
        """Record the preview images written after validation ``epoch``."""
        ...

    def experiment_completed(self, *, experiment_id: str, summary: Mapping[str, Any]) -> None:
        """Close the run as finished."""
        ...

    def experiment_interrupted(self, *, experiment_id: str, error: str) -> None:
        """Close the run as failed."""
        ...


def require_module(module: str, extra: str, what: str) -> None:
    """Refuse a frontend whose client package is missing, saying which extra installs it."""
    from importlib.util import find_spec

    if find_spec(module) is None:
        raise ModuleNotFoundError(f"{what} is not installed: pip install 'mipcandy[{extra}]'")


def unknown_experiment(tracker: str, experiment_id: str) -> FrontendError:
    """The error of an event for an experiment whose ``experiment_created`` never arrived."""
    return FrontendError(f"no {tracker} run for experiment {experiment_id!r}: its experiment_created event was never "
                         f"received")
