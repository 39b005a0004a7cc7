"""Selected frontends receive the experiment events off the training loop: one bounded queue and worker per frontend.

:meth:`FrontendSet.emit` only appends the event to each frontend's queue (microseconds), so a slow or hung tracker
never slows training. A worker delivers its frontend's events one at a time, in order, through the plugin manager.
A frontend that raises (a 500, a timeout, a bug) is reported once with a :class:`FrontendWarning`, tried again at
the next event, and disabled after ``max_failures`` consecutive failures. When its queue is full, epoch and preview
events are dropped (counted, reported once); the run's opening and closing events are always queued. Nothing is
lost for good: ``metrics.csv`` in the experiment folder stays the ground truth.
"""
from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from mipcandy.hookspecs import EVENT_HOOKS, complete_event

DEFAULT_CAPACITY = 256
DEFAULT_MAX_FAILURES = 5
OPENING = "tracking_opened"
LIFECYCLE = frozenset({"experiment_created", "experiment_completed", "experiment_interrupted"})
RUN_EVENTS = tuple(hook for hook in EVENT_HOOKS if hook != OPENING)

Deliver = Callable[[str, dict[str, Any]], None]


class FrontendWarning(RuntimeWarning):
    """A frontend failed, fell behind or was disabled; training goes on and ``metrics.csv`` keeps every value."""


@dataclass
class ChannelStats:
    """What became of the events handed to one frontend."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0
    disabled: bool = False


def _report(message: str) -> None:
    warnings.warn(message, FrontendWarning, stacklevel=3)


class Channel:
    """One frontend's queue and the daemon thread that delivers it."""

    def __init__(self, name: str, deliver: Deliver, *, capacity: int = DEFAULT_CAPACITY,
                 max_failures: int = DEFAULT_MAX_FAILURES, report: Callable[[str], None] = _report) -> None:
        if capacity < 1 or max_failures < 1:
            raise ValueError(f"frontend {name!r}: capacity and max_failures must be at least 1, got {capacity} and "
                             f"{max_failures}")
        self.name, self.capacity, self.max_failures = name, capacity, max_failures
        self._deliver, self._report = deliver, report
        self._events: deque[tuple[str, dict[str, Any]]] = deque()
        self._condition = threading.Condition()
        self._closed = self._busy = False
        self._consecutive = 0
        self._warned: set[str] = set()
        self.stats = ChannelStats()
        self._thread = threading.Thread(target=self._work, name=f"candy-frontend-{name}", daemon=True)
        self._thread.start()

    def put(self, hook: str, kwargs: dict[str, Any]) -> None:
        """Queue one event without ever waiting: a full queue drops epoch and preview events (reported once)."""
        with self._condition:
            if self._closed or self.stats.disabled:
                self.stats.dropped += 1
                return
            full = hook not in LIFECYCLE and len(self._events) >= self.capacity
            if full:
                self.stats.dropped += 1
            else:
                self._events.append((hook, kwargs))
                self._condition.notify()
        if full:
            self._once("behind", f"frontend {self.name!r} is falling behind ({self.capacity} events queued): its "
                                 f"epoch and preview events are dropped until it catches up; metrics.csv keeps "
                                 f"every value")

    def _once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._report(message)

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._events and not self._closed:
                    self._condition.wait()
                if not self._events:
                    return
                hook, kwargs = self._events.popleft()
                if self.stats.disabled:
                    self.stats.dropped += 1
                    continue
                self._busy = True
            try:
                self._deliver(hook, kwargs)
            except BaseException as error:  # a worker must outlive anything a frontend raises, SystemExit included
                self._failed(hook, error)
            else:
                self._consecutive = 0
                self.stats.delivered += 1
            finally:
                with self._condition:
                    self._busy = False

    def _failed(self, hook: str, error: BaseException) -> None:
        self._consecutive += 1
        self.stats.failed += 1
        reason = f"{type(error).__name__}: {error}"
        if self._consecutive >= self.max_failures:
            self.stats.disabled = True
            self._report(f"frontend {self.name!r} is disabled after {self._consecutive} consecutive failures (last, "
                         f"in {hook}: {reason}); training goes on and metrics.csv keeps every value")
        else:
            self._once("failed", f"frontend {self.name!r} failed in {hook}: {reason}; it is tried again at the next "
                                 f"event and disabled after {self.max_failures} consecutive failures")

    def stop(self) -> None:
        """Accept no more events; the worker delivers what is queued, then ends."""
        with self._condition:
            self._closed = True
            self._condition.notify()

    def join(self, deadline: float | None) -> None:
        """Wait for the worker until ``deadline`` (``time.monotonic()``; ``None``: no limit); report what is left."""
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._condition:
            self.stats.pending = len(self._events) + int(self._busy)
        if self.stats.pending:
            self._report(f"frontend {self.name!r} is still busy; {self.stats.pending} event(s) were not delivered "
                         f"(metrics.csv keeps every value)")


def _snapshot(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy the trainer may go on mutating: mappings and lists one level deep."""
    return {key: dict(value) if isinstance(value, Mapping) else list(value) if isinstance(value, list) else value
            for key, value in kwargs.items()}


class FrontendSet:
    """The frontends selected for a run. ``emit`` queues an event for each; ``close`` drains the queues.

    An empty set (no ``--track``) does nothing. Use it as a context manager to close it on the way out.
    """

    def __init__(self, channels: Iterable[Channel] = (), *, root: Path | None = None) -> None:
        self.channels = {channel.name: channel for channel in channels}
        self.root = root

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.channels)

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Queue event ``hook`` for every frontend and return at once; ``experiment_created`` gets this set's root
        when the caller gives none."""
        if hook not in RUN_EVENTS:
            raise ValueError(f"{hook!r} is not an experiment event ({', '.join(RUN_EVENTS)})")
        if not self.channels:
            return
        kwargs = complete_event(hook, kwargs)
        if hook == "experiment_created" and kwargs["root"] is None:
            kwargs["root"] = self.root
        event = _snapshot(kwargs)
        for channel in self.channels.values():
            channel.put(hook, event)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued and stop the workers; waits at most ``timeout`` seconds for all (``None``: until
        done). A frontend still busy then is reported and left behind (its thread is a daemon)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for channel in self.channels.values():
            channel.stop()
        for channel in self.channels.values():
            channel.join(deadline)

    def stats(self) -> dict[str, ChannelStats]:
        """Per frontend: events delivered, failed, dropped, left pending, and whether it was disabled."""
        return {name: channel.stats for name, channel in self.channels.items()}

    def __enter__(self) -> FrontendSet:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _names(names: str | Sequence[str]) -> list[str]:
    """``["mlflow", "wandb"]`` from ``"mlflow,wandb"`` or a list of such, first occurrence kept."""
    items = [names] if isinstance(names, str) else list(names)
    seen: dict[str, None] = {}
    for item in items:
        for name in item.split(","):
            if name.strip():
                seen.setdefault(name.strip(), None)
    return list(seen)


def open_frontends(names: str | Sequence[str], *, root: str | Path, capacity: int = DEFAULT_CAPACITY,
                   max_failures: int = DEFAULT_MAX_FAILURES) -> FrontendSet:
    """Select frontends by name (``--track mlflow,wandb``) for a run whose experiments live under ``root``.

    Every name is checked, and every frontend's ``tracking_opened`` hook run, before this returns, so a typo, a
    missing package or a missing secret stops the run before it writes anything.

    :raises BundleError: naming the frontend, why it cannot be used and the installed ones.
    """
    from mipcandy.plugins import BundleError, get_plugin_manager

    selected = _names(names)
    if not selected:
        return FrontendSet(root=Path(root))
    manager = get_plugin_manager()
    for name in selected:
        manager.require(name, "frontend")
    for name in selected:
        try:
            manager.deliver(name, OPENING, root=Path(root))
        except Exception as error:
            raise BundleError(f"frontend {name!r} cannot track this run: {error}") from error

    def deliverer(name: str) -> Deliver:
        return lambda hook, kwargs: manager.deliver(name, hook, **kwargs)

    return FrontendSet((Channel(name, deliverer(name), capacity=capacity, max_failures=max_failures)
                        for name in selected), root=Path(root))


def register_frontend(frontend: object, name: str) -> None:
    """Make an in-process frontend selectable by ``name`` (notebooks, tests, a :func:`create_hybrid_frontend`).

    :raises BundleError: when the name is taken or the object's hooks do not match the event specs.
    """
    from mipcandy.plugins import BundleError, get_plugin_manager

    record = get_plugin_manager().register(frontend, name, kind="frontend")
    if not record.ok:
        raise BundleError(f"frontend {name!r} could not be registered: {record.error}")
