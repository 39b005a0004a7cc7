"""Shared fixtures for the core's tests."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Set by the nox sessions, which install every peer and tracker: there a test that would skip for a missing import
# (pytest.importorskip) fails instead, so a broken install can never pass as "skipped".
REQUIRE_PEERS = os.environ.get("CANDY_REQUIRE_PEERS", "") == "1"


def _missing_import(report: pytest.CollectReport | pytest.TestReport) -> bool:
    return report.skipped and "could not import" in str(report.longrepr)


def _fail_missing_import(report: pytest.CollectReport | pytest.TestReport) -> None:
    if REQUIRE_PEERS and _missing_import(report):
        report.outcome = "failed"
        report.longrepr = f"{report.longrepr}\n(CANDY_REQUIRE_PEERS=1: this session installs it, so it must import)"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A module skipped at import for a missing peer fails the collection where peers are required."""
    outcome = yield
    _fail_missing_import(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test skipped for a missing peer fails where peers are required."""
    outcome = yield
    _fail_missing_import(outcome.get_result())


@pytest.fixture(autouse=True)
def _isolated_plugin_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test inherits the caller's plugin switches or a manager loaded by another test."""
    for name in ("CANDY_PLUGINS", "CANDY_DISABLED_PLUGINS", "CANDY_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    from mipcandy.plugins import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str, str], Path]:
    """Write installed-looking distributions (module + dist-info with an entry point) on ``sys.path``.

    ``importlib.metadata`` discovers them exactly as it discovers pip-installed ones.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def add(bundle: str, module_source: str, version: str = "1.0", *, group: str = "mipcandy.bundles",
            distribution: str | None = None) -> Path:
        distribution = distribution or f"candy-test-{bundle}"
        module = distribution.replace("-", "_")
        (site / f"{module}.py").write_text(textwrap.dedent(module_source), encoding="utf-8")
        info = site / f"{module}-{version}.dist-info"
        info.mkdir()
        metadata = f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        (info / "METADATA").write_text(metadata, encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[{group}]\n{bundle} = {module}\n", encoding="utf-8")
        added.append(module)
        return site

    yield add
    for module in added:
        sys.modules.pop(module, None)


def run_candy(*args: str, env: dict[str, str] | None = None, pythonpath: Path | None = None) -> Any:
    """Run ``python -m mipcandy ARGS`` in a fresh interpreter and return the CompletedProcess."""

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CANDY_")}
    if pythonpath is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "mipcandy", *args], capture_output=True, encoding="utf-8",
                          env=full_env, timeout=300)


@pytest.fixture
def candy_cli() -> Callable[..., Any]:
    """The ``candy`` command line, run as a subprocess (see :func:`run_candy`)."""
    return run_candy
