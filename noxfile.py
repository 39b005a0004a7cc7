"""Test sessions. Run everything with ``nox``; one bundle alone with ``nox -s "plugin(unet)"``.

torch is pinned to the local CPU build through ``constraints.txt`` (exported as PIP_CONSTRAINT, so pip
also applies it inside build environments): an unpinned torch would pull a multi-GB CUDA build.

The core's dependencies (torch, SimpleITK, numpy, matplotlib...) are installed once, into ``.nox/shared-deps``,
and every session but lint sees them through a ``.pth`` file instead of unpacking its own copy: pip counts them as
installed and leaves them alone (a session that needs another version gets its own, which comes first on the path).
Bundles are never shared, so ``plugin(NAME)`` still holds the core and that one bundle. The folder is rebuilt
when ``constraints.txt``, the core's dependencies or the Python version change. pip's cache stays inside the
clone, in ``.nox/pip-cache``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib"]
SHARED = ROOT / ".nox" / "shared-deps"
STAMP = "installed-for.txt"

os.environ["PIP_CONSTRAINT"] = str(CONSTRAINTS)
os.environ.setdefault("PIP_CACHE_DIR", str(ROOT / ".nox" / "pip-cache"))
nox.options.sessions = ["lint", "tests", "plugin"]


def core_requirements() -> list[str]:
    """The core's runtime dependencies, as its pyproject.toml declares them."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]


def _stamp(python_tag: str) -> str:
    """What the shared folder was installed for: the Python (``cpython-311``), the requirements, the constraints."""
    digest = hashlib.sha256(CONSTRAINTS.read_bytes() + json.dumps(core_requirements()).encode()).hexdigest()
    return f"{python_tag} {digest}"


def share_core_dependencies(session: nox.Session) -> None:
    """Put the shared dependencies on the session's path, installing them (with its Python) on first use."""
    probe = "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_paths()['purelib'])"
    output = session.run_install("python", "-c", probe, silent=True)
    if output is None:  # installs are skipped (-R, --no-install): the reused venv has its .pth file already
        return
    python_tag, site = str(output).strip().splitlines()[-1].split(" ", 1)
    stamp = SHARED / STAMP
    if not stamp.is_file() or stamp.read_text(encoding="utf-8") != _stamp(python_tag):
        shutil.rmtree(SHARED, ignore_errors=True)
        session.run_install("python", "-m", "pip", "install", "--quiet", "--target", str(SHARED), "-c",
                            str(CONSTRAINTS), *core_requirements())
        stamp.write_text(_stamp(python_tag), encoding="utf-8")
    (Path(site) / "shared_deps.pth").write_text(f"{SHARED}\n", encoding="utf-8")


def install(session: nox.Session, *args: str) -> None:
    share_core_dependencies(session)
    session.install("-c", str(CONSTRAINTS), *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The core's tests, with every bundle, the peers (`bench`), the trackers (`tracking`) and pyvista (`viz3d`)."""
    install(session, "setuptools", "pytest", ".[bench,tracking,viz3d]", *(f"plugins/{name}" for name in PLUGINS))
    # Everything is installed here, so a test that would skip for a missing peer fails instead (tests/conftest.py).
    session.run(*PYTEST, *(session.posargs or ["tests"]), env={"CANDY_REQUIRE_PEERS": "1"})


@nox.session
@nox.parametrize("plugin", PLUGINS, ids=PLUGINS)
def plugin(session: nox.Session, plugin: str) -> None:
    """The core plus one bundle alone: that bundle's tests, and `candy plugins` lists exactly it."""
    install(session, "setuptools", "pytest", ".", f"plugins/{plugin}[test]")
    session.run(*PYTEST, *(session.posargs or [f"plugins/{plugin}/tests"]))
    output = session.run("candy", "plugins", "--json", "--strict", silent=True)
    if output is None:  # --install-only: nothing ran
        return
    listed = json.loads(output)
    names = [(entry["name"], entry["status"]) for entry in listed if entry["kind"] == "bundle"]
    if names != [(plugin, "ok")]:
        session.error(f"`candy plugins` should list exactly [{plugin!r}] as ok, got {names}")
    session.log(f"candy plugins lists exactly {plugin!r}: ok")
