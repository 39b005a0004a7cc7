"""Test sessions. Run everything with ``nox``; one bundle alone with ``nox -s "plugin(unet)"``.

torch is pinned to the local CPU build through ``constraints.txt`` (exported as PIP_CONSTRAINT, so pip
also applies it inside build environments): an unpinned torch would pull a multi-GB CUDA build.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib"]

os.environ["PIP_CONSTRAINT"] = str(CONSTRAINTS)
nox.options.sessions = ["lint", "tests", "plugin"]


def install(session: nox.Session, *args: str) -> None:
    session.install("-c", str(CONSTRAINTS), *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The core's tests, with every bundle installed, and the peers (the `bench` extra) to check against."""
    install(session, "setuptools", "pytest", ".[bench]", *(f"plugins/{name}" for name in PLUGINS))
    session.run(*PYTEST, *(session.posargs or ["tests"]))


@nox.session
@nox.parametrize("plugin", PLUGINS, ids=PLUGINS)
def plugin(session: nox.Session, plugin: str) -> None:
    """The core plus one bundle alone: that bundle's tests, and `candy plugins` lists exactly it."""
    install(session, "setuptools", "pytest", ".", f"plugins/{plugin}[test]")
    session.run(*PYTEST, *(session.posargs or [f"plugins/{plugin}/tests"]))
    listed = json.loads(session.run("candy", "plugins", "--json", "--strict", silent=True))
    names = [(entry["name"], entry["status"]) for entry in listed if entry["kind"] == "bundle"]
    if names != [(plugin, "ok")]:
        session.error(f"`candy plugins` should list exactly [{plugin!r}] as ok, got {names}")
    session.log(f"candy plugins lists exactly {plugin!r}: ok")
