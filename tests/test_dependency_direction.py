"""The core's packages depend one way: layer/common -> data -> training -> presets -> inference/evaluation -> cli.

Every ``import`` of a ``mipcandy`` module inside the core (at module level or inside a function) is parsed; a
package may import its own layer and the layers below it, never one above.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core" / "mipcandy"

# Lower number = lower layer. Modules at the package root (layer, plugins, hookspecs...) and the building blocks
# (common, metrics) are the base; tracking frontends and plots sit beside training, which drives them.
LAYERS: dict[str, int] = {
    "": 0, "layer": 0, "atomic": 0, "console": 0, "hookspecs": 0, "plugins": 0, "defaults": 0, "_lazy": 0, "common": 0,
    "metrics": 0,
    "data": 1,
    "visualization": 2, "frontend": 2, "training": 2,
    "presets": 3,
    "inference": 4, "evaluation": 4,
    "cli": 5, "__main__": 5,
}


def layer_of(module: str) -> int:
    """The layer of ``mipcandy.<package>...``."""
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else ""]


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mipcandy":
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "mipcandy"]
    return found


MODULES = sorted(p for p in CORE.rglob("*.py") if p.name != "__init__.py" or p.parent != CORE)


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def upward_imports(path: Path, own: int) -> list[str]:
    """The imports of ``path`` from layers above ``own``."""
    return [f"line {line}: {module}" for line, module in imports(path)
            if module != "mipcandy" and layer_of(module) > own]


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "segmentation.py"
    source.write_text("def f():\n    from mipcandy.inference.predictor import Predictor\n", encoding="utf-8")
    assert upward_imports(source, LAYERS["presets"]) == ["line 2: mipcandy.inference.predictor"]
    assert upward_imports(source, LAYERS["cli"]) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_imports_point_down(path: Path) -> None:
    own = layer_of(module_name(path))
    upward = upward_imports(path, own)
    assert not upward, f"{path.relative_to(CORE)} (layer {own}) imports from above: {'; '.join(upward)}"


def test_every_package_has_a_layer() -> None:
    packages = {p.relative_to(CORE).parts[0].removesuffix(".py") for p in CORE.iterdir()
                if not p.name.startswith((".", "__pycache__")) and (p.suffix == ".py" or p.is_dir())}
    assert packages - {"__init__"} <= set(LAYERS)
