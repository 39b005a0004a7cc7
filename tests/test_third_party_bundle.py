"""A third-party bundle, taken verbatim from the README, really pip-installed and used by name.

Bundles are installed with ``pip install --target`` into a throwaway folder that only the subprocesses
see (through PYTHONPATH), so the test environment itself is never modified.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BROKEN_IMPORT = '''
raise ImportError("candy_brokenimport needs libfoo, which is not installed")
'''
MISSPELLED_HOOK = '''
from mipcandy import hookimpl

@hookimpl
def build_netwrok(example_shape, num_classes, options):
    raise AssertionError("never called")
'''


def readme_bundle_files() -> dict[str, str]:
    """The files of the README's "Write your own bundle" example, keyed by file name."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- bundle-file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    return dict(blocks)


def write_distribution(folder: Path, dist: str, entry: str, module: str, source: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.0.1"

        [project.entry-points."mipcandy.bundles"]
        {entry} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
    '''), encoding="utf-8")
    (folder / f"{module}.py").write_text(source, encoding="utf-8")
    return folder


def pip_install(target: Path, *projects: Path) -> None:
    """A real ``pip install``; without build isolation when setuptools is at hand (no index needed)."""
    try:
        import setuptools  # noqa: F401

        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--target", str(target),
                    *map(str, projects)], check=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("bundles")
    readme = base / "tinyseg"
    readme.mkdir()
    files = readme_bundle_files()
    assert set(files) == {"pyproject.toml", "candy_tinyseg.py"}
    assert sum(len(body.splitlines()) for body in files.values()) < 60
    for name, body in files.items():
        (readme / name).write_text(body, encoding="utf-8")
    broken = write_distribution(base / "broken", "candy-brokenimport", "brokenimport", "candy_brokenimport",
                                BROKEN_IMPORT)
    typo = write_distribution(base / "typo", "candy-typohook", "typohook", "candy_typohook", MISSPELLED_HOOK)
    target = base / "site"
    pip_install(target, readme, broken, typo)
    return target


def plugins_json(candy_cli, installed: Path, **env: str) -> list[dict]:
    result = candy_cli("plugins", "--json", pythonpath=installed, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_readme_bundle_is_listed_and_broken_ones_are_reported(candy_cli, installed) -> None:
    entries = {e["name"]: e for e in plugins_json(candy_cli, installed)}
    tiny = entries["tinyseg"]
    assert (tiny["status"], tiny["distribution"], tiny["version"]) == ("ok", "candy-tinyseg", "0.1.0")
    assert tiny["hooks"] == ["build_network", "bundle_info"] and tiny["error"] is None
    assert tiny["summary"] == "two convolutions" and tiny["dimensions"] == [2, 3]
    assert entries["brokenimport"]["status"] == "error"
    assert "ImportError" in entries["brokenimport"]["error"] and "libfoo" in entries["brokenimport"]["error"]
    assert entries["typohook"]["status"] == "invalid" and "build_netwrok" in entries["typohook"]["error"]
    for entry in entries.values():
        assert set(entry) >= {"name", "distribution", "version", "hooks", "status", "error"}


def test_table_lists_everything_and_strict_fails(candy_cli, installed) -> None:
    table = candy_cli("plugins", pythonpath=installed, env={"COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    for text in ("NAME", "DISTRIBUTION", "VERSION", "HOOKS", "STATUS", "tinyseg", "brokenimport", "typohook",
                 "libfoo", "build_netwrok", "MIP Candy 0.1.0"):
        assert text in table.stdout
    assert candy_cli("plugins", "--strict", pythonpath=installed).returncode == 1
    assert candy_cli("plugins", "--strict", pythonpath=installed, env={"CANDY_PLUGINS": "tinyseg"}).returncode == 0
    verbose = candy_cli("plugins", "-v", pythonpath=installed, env={"COLUMNS": "250"})
    assert "Traceback" in verbose.stdout and "raise ImportError" in verbose.stdout


@pytest.mark.parametrize("env, expected", [
    ({"CANDY_PLUGINS": "tinyseg"}, {"tinyseg": "ok"}),
    ({"CANDY_PLUGINS": "candy-tinyseg,typohook"}, {"tinyseg": "ok", "typohook": "invalid"}),
    ({"CANDY_PLUGINS": ""}, {}),
    ({"CANDY_DISABLE_PLUGIN_AUTOLOAD": "1"}, {}),
])
def test_allowlist_and_autoload_switches(candy_cli, installed, env, expected) -> None:
    assert {e["name"]: e["status"] for e in plugins_json(candy_cli, installed, **env)} == expected


def test_blocklist(candy_cli, installed) -> None:
    entries = {e["name"]: e["status"] for e in plugins_json(candy_cli, installed, CANDY_DISABLED_PLUGINS="tinyseg")}
    assert entries["tinyseg"] == "blocked" and entries["brokenimport"] == "error"


def test_network_is_built_by_name_through_the_hook(installed) -> None:
    code = textwrap.dedent('''
        import torch, mipcandy
        net = mipcandy.build_network("tinyseg", example_shape=(1, 16, 16), num_classes=3, options={"width": 4})
        print(tuple(net(torch.zeros(2, 1, 16, 16)).shape), net[0].out_channels)
        net3d = mipcandy.build_network("tinyseg", example_shape=(2, 8, 8, 8), num_classes=2)
        print(tuple(net3d(torch.zeros(1, 2, 8, 8, 8)).shape))
        try:
            mipcandy.build_network("typohook", example_shape=(1, 8, 8), num_classes=2)
        except mipcandy.plugins.BundleError as error:
            print("ERROR", error)
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=300,
                            env={**__import__("os").environ, "PYTHONPATH": str(installed)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "(2, 3, 16, 16) 4"
    assert lines[1] == "(1, 2, 8, 8, 8)"
    assert lines[2].startswith("ERROR bundle 'typohook'") and "build_netwrok" in lines[2]
