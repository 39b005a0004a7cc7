"""Bundles use the core's public API only: no private module, no private name, no private attribute.

Every Python file of every bundle under ``plugins/`` is parsed (not imported): an ``import`` or ``from ... import``
of ``mipcandy`` whose module path or imported name has a component starting with ``_``, and any access to a
private attribute the core defines (``self._options()``) that the bundle does not define itself, fail the test
with the file and line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_FILES = sorted(path for path in (ROOT / "plugins").glob("*/**/*.py")
                      if "build" not in path.relative_to(ROOT / "plugins").parts)


def defined_private_names(sources: list[str]) -> set[str]:
    """Private names that ``sources`` define: functions, methods, classes and assigned attributes."""
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


CORE_PRIVATE = defined_private_names([p.read_text(encoding="utf-8") for p in (ROOT / "core").rglob("*.py")])


def private_uses(source: str, own: set[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, what) for every private core name the source reaches (``own``: private names the bundle defines)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mipcandy":
            parts = node.module.split(".") + [alias.name for alias in node.names]
            found += [(node.lineno, f"from {node.module} import {alias.name}") for alias in node.names
                      if any(part.startswith("_") and part != "__version__" for part in parts)]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names
                      if alias.name.split(".")[0] == "mipcandy"
                      and any(part.startswith("_") for part in alias.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr in CORE_PRIVATE - own:
            found.append((node.lineno, f".{node.attr}"))
    return found


def test_the_check_catches_what_the_contract_forbids() -> None:
    forbidden = ("from mipcandy._lazy import lazy_attributes\n"
                 "from mipcandy.training.trainer import _versions\n"
                 "import mipcandy._lazy\n"
                 "options = self._options()\n")
    assert [line for line, _ in private_uses(forbidden)] == [1, 2, 3, 4]
    assert private_uses("from mipcandy import Predictor, lazy_attributes\nimport mipcandy.data\nx.__class__\n") == []


@pytest.mark.parametrize("path", BUNDLE_FILES, ids=lambda p: str(p.relative_to(ROOT / "plugins")))
def test_bundles_use_public_names_only(path: Path) -> None:
    bundle = ROOT / "plugins" / path.relative_to(ROOT / "plugins").parts[0]
    own = defined_private_names([p.read_text(encoding="utf-8") for p in bundle.rglob("*.py") if "build" not in p.parts])
    uses = private_uses(path.read_text(encoding="utf-8"), own)
    assert not uses, f"{path.relative_to(ROOT)} reaches private names: " + ", ".join(
        f"line {line}: {what}" for line, what in uses)


def test_every_bundle_is_checked() -> None:
    bundles = {path.relative_to(ROOT / "plugins").parts[0] for path in BUNDLE_FILES}
    assert {"unet", "vnet", "mednext", "unetr", "unetpp", "cmunext", "monai"} <= bundles
