"""Selecting frontends and handing them events: off the training loop, in order, failures isolated."""
from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import pytest

from mipcandy import hookimpl
from mipcandy.frontend import (
    FrontendError,
    FrontendSet,
    FrontendWarning,
    create_hybrid_frontend,
    open_frontends,
    register_frontend,
)
from mipcandy.plugins import BundleError, get_plugin_manager


class Recorder:
    """Records every event it gets; ``fail`` makes the listed hooks raise, ``delay`` slows each event."""

    def __init__(self, *, fail: tuple[str, ...] = (), delay: float = 0.0, failures: int | None = None) -> None:
        self.seen: list[tuple[str, dict]] = []
        self.fail, self.delay, self.failures = fail, delay, failures
        self.threads: set[str] = set()

    def _record(self, hook: str, **kwargs) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if hook in self.fail and (self.failures is None or self.failures > 0):
            self.failures = None if self.failures is None else self.failures - 1
            raise ConnectionError("server said 500")
        self.seen.append((hook, kwargs))

    @hookimpl
    def tracking_opened(self, root: Path) -> None:
        self._record("tracking_opened", root=root)

    @hookimpl
    def experiment_created(self, experiment_id, folder, config, root, model_summary, num_parameters, num_macs):
        self._record("experiment_created", experiment_id=experiment_id, root=root, num_parameters=num_parameters)

    @hookimpl
    def epoch_updated(self, experiment_id, epoch, metrics, num_epochs, best_score, remaining_seconds):
        self._record("epoch_updated", epoch=epoch, metrics=metrics, best_score=best_score)

    @hookimpl
    def preview_saved(self, experiment_id, epoch, paths):
        self._record("preview_saved", epoch=epoch)

    @hookimpl
    def experiment_completed(self, experiment_id, summary):
        self._record("experiment_completed", summary=summary)

    @hookimpl
    def experiment_interrupted(self, experiment_id, error):
        self._record("experiment_interrupted", error=error)


def run_events(frontends: FrontendSet, epochs: int = 3) -> None:
    """What a short training run emits, from the trainer's point of view."""
    frontends.emit("experiment_created", experiment_id="exp", folder=Path("exp"), config={"lr": 0.01})
    for epoch in range(1, epochs + 1):
        frontends.emit("epoch_updated", experiment_id="exp", epoch=epoch, metrics={"loss": 1.0 / epoch})
    frontends.emit("experiment_completed", experiment_id="exp", summary={"best_score": 0.5})


def hooks(recorder: Recorder) -> list[str]:
    return [hook for hook, _ in recorder.seen]


def test_events_arrive_in_order_on_a_worker_thread_with_the_root_filled_in(tmp_path: Path) -> None:
    recorder = Recorder()
    register_frontend(recorder, "recorder")
    with open_frontends(["recorder"], root=tmp_path) as frontends:
        run_events(frontends)
    assert hooks(recorder) == ["tracking_opened", "experiment_created", "epoch_updated", "epoch_updated",
                               "epoch_updated", "experiment_completed"]
    created = recorder.seen[1][1]
    assert created["root"] == tmp_path and created["num_parameters"] is None  # filled: the caller gave neither
    assert [kw["epoch"] for hook, kw in recorder.seen if hook == "epoch_updated"] == [1, 2, 3]
    assert "candy-frontend-recorder" in recorder.threads
    assert frontends.stats()["recorder"].delivered == 5


def test_the_caller_may_mutate_what_it_emitted(tmp_path: Path) -> None:
    recorder = Recorder(delay=0.05)
    register_frontend(recorder, "recorder")
    frontends = open_frontends("recorder", root=tmp_path)
    metrics = {"loss": 1.0}
    frontends.emit("epoch_updated", experiment_id="exp", epoch=1, metrics=metrics)
    metrics["loss"] = 99.0
    frontends.close()
    assert recorder.seen[-1][1]["metrics"] == {"loss": 1.0}


def test_a_slow_frontend_does_not_slow_emit_and_close_gives_up_at_the_timeout(tmp_path: Path) -> None:
    slow, fast = Recorder(delay=0.5), Recorder()
    register_frontend(slow, "slow")
    register_frontend(fast, "fast")
    frontends = open_frontends("slow,fast", root=tmp_path)
    started = time.perf_counter()
    run_events(frontends, epochs=5)
    emitting = time.perf_counter() - started
    with pytest.warns(FrontendWarning, match="'slow' is still busy"):
        frontends.close(timeout=0.2)
    assert emitting < 0.5  # 7 events queued while the slow one sleeps 0.5 s on the first
    assert len(hooks(fast)) == 8 and frontends.stats()["slow"].pending > 0


def test_a_failing_frontend_is_reported_once_retried_and_disabled_while_the_others_go_on(tmp_path: Path) -> None:
    broken, healthy = Recorder(fail=("epoch_updated", "experiment_completed")), Recorder()
    register_frontend(broken, "broken")
    register_frontend(healthy, "healthy")
    frontends = open_frontends(["broken", "healthy"], root=tmp_path, max_failures=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_events(frontends, epochs=5)
        frontends.close()
    messages = [str(w.message) for w in caught if issubclass(w.category, FrontendWarning)]
    assert len(messages) == 2, messages
    assert "'broken' failed in epoch_updated: ConnectionError: server said 500; it is tried again" in messages[0]
    assert "'broken' is disabled after 3 consecutive failures" in messages[1]
    stats = frontends.stats()["broken"]
    assert stats.failed == 3 and stats.disabled and stats.dropped == 3  # epochs 4, 5 and the completion
    assert hooks(healthy)[1:] == ["experiment_created", *["epoch_updated"] * 5, "experiment_completed"]


def test_a_frontend_that_recovers_is_reported_once_and_stays_enabled(tmp_path: Path) -> None:
    flaky = Recorder(fail=("epoch_updated",), failures=2)
    register_frontend(flaky, "flaky")
    frontends = open_frontends(["flaky"], root=tmp_path, max_failures=3)
    with pytest.warns(FrontendWarning) as caught:
        run_events(frontends, epochs=5)
        frontends.close()
    assert len(caught) == 1
    assert [kw["epoch"] for hook, kw in flaky.seen if hook == "epoch_updated"] == [3, 4, 5]
    assert not frontends.stats()["flaky"].disabled and hooks(flaky)[-1] == "experiment_completed"


def test_a_full_queue_drops_epochs_but_never_the_end_of_the_run(tmp_path: Path) -> None:
    busy, gate = threading.Event(), threading.Event()

    class Blocked(Recorder):
        @hookimpl
        def experiment_created(self, experiment_id, folder, config, root, model_summary, num_parameters, num_macs):
            busy.set()
            gate.wait(5)
            self._record("experiment_created")

    blocked = Blocked()
    register_frontend(blocked, "blocked")
    frontends = open_frontends(["blocked"], root=tmp_path, capacity=2)
    frontends.emit("experiment_created", experiment_id="exp", folder=tmp_path, config={})
    assert busy.wait(5)
    with pytest.warns(FrontendWarning, match="'blocked' is falling behind"):
        for epoch in range(1, 7):
            frontends.emit("epoch_updated", experiment_id="exp", epoch=epoch, metrics={})
    frontends.emit("experiment_interrupted", experiment_id="exp", error="KeyboardInterrupt: ")
    gate.set()
    frontends.close()
    assert hooks(blocked)[1:] == ["experiment_created", "epoch_updated", "epoch_updated", "experiment_interrupted"]
    assert [kw["epoch"] for hook, kw in blocked.seen if hook == "epoch_updated"] == [1, 2]
    assert frontends.stats()["blocked"].dropped == 4


def test_an_unknown_frontend_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    root = tmp_path / "experiments"
    with pytest.raises(BundleError, match=r"no frontend named 'tensorbord' is installed \(available: .*mlflow"):
        open_frontends(["mlflow", "tensorbord"], root=root)
    assert not root.exists()


def test_a_frontend_refusing_the_run_stops_it_with_its_reason(tmp_path: Path) -> None:
    class Unconfigured(Recorder):
        @hookimpl
        def tracking_opened(self, root: Path) -> None:
            raise RuntimeError("the token is not set: export TRACKER_TOKEN=...")

    register_frontend(Unconfigured(), "unconfigured")
    with pytest.raises(BundleError, match="'unconfigured' cannot track this run: the token is not set"):
        open_frontends(["unconfigured"], root=tmp_path)


def test_no_frontend_selected_is_a_set_that_does_nothing(tmp_path: Path) -> None:
    frontends = open_frontends([], root=tmp_path)
    assert frontends.names == ()
    run_events(frontends)
    frontends.close()
    with pytest.raises(ValueError, match="'preview' is not an experiment event"):
        frontends.emit("preview", experiment_id="exp")


def test_a_third_party_frontend_needs_only_an_entry_point(site_dir, tmp_path: Path) -> None:
    site_dir("ledger", '''
        from mipcandy import hookimpl
        SEEN = []

        @hookimpl
        def epoch_updated(experiment_id, epoch, metrics):
            SEEN.append((experiment_id, epoch, dict(metrics)))
        ''', group="mipcandy.frontends")
    assert get_plugin_manager().require("ledger", "frontend").ok
    with open_frontends(["ledger"], root=tmp_path) as frontends:
        run_events(frontends, epochs=2)
    import candy_test_ledger

    assert candy_test_ledger.SEEN == [("exp", 1, {"loss": 1.0}), ("exp", 2, {"loss": 0.5})]


def test_a_hybrid_frontend_fans_out_and_a_failing_member_does_not_starve_the_others(tmp_path: Path) -> None:
    class Minimal:
        """A member whose methods ask for fewer parameters than the events carry."""

        def __init__(self) -> None:
            self.epochs: list[int] = []

        def tracking_opened(self, root): pass

        def experiment_created(self, experiment_id): pass

        def epoch_updated(self, epoch): self.epochs.append(epoch)

        def preview_saved(self, paths): pass

        def experiment_completed(self, summary): pass

        def experiment_interrupted(self, error): pass

    failing, minimal = Recorder(fail=("epoch_updated",)), Minimal()
    register_frontend(create_hybrid_frontend(failing, minimal), "team")
    frontends = open_frontends(["team"], root=tmp_path, max_failures=10)
    with pytest.warns(FrontendWarning, match="1 of 2 members failed in epoch_updated: Recorder: ConnectionError"):
        run_events(frontends, epochs=3)
        frontends.close()
    assert minimal.epochs == [1, 2, 3]
    assert hooks(failing) == ["tracking_opened", "experiment_created", "experiment_completed"]
    with pytest.raises(TypeError, match="is not a Frontend"):
        create_hybrid_frontend(failing, object())
    with pytest.raises(FrontendError):
        create_hybrid_frontend(failing).epoch_updated(experiment_id="x", epoch=1, metrics={}, num_epochs=None,
                                                      best_score=None, remaining_seconds=None)
