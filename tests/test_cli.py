"""The ``candy`` command line: start-up cost and basic behaviour."""
from __future__ import annotations

import subprocess
import sys

from mipcandy import __version__


def test_candy_plugins_does_not_import_torch() -> None:
    code = ("import sys; from mipcandy.cli import main; status = main(['plugins', '--json']); "
            "heavy = sorted(m for m in ('torch', 'numpy', 'SimpleITK', 'matplotlib') if m in sys.modules); "
            "print('HEAVY', heavy, status)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY [] 0"


def test_help_lists_commands_without_importing_torch() -> None:
    code = ("import sys\nfrom mipcandy.cli import build_parser\nprint(build_parser().format_help())\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "plugins" in result.stdout and result.stdout.strip().endswith("False")


def test_version_and_missing_command(candy_cli) -> None:
    version = candy_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"mipcandy {__version__}"
    bare = candy_cli()
    assert bare.returncode == 2 and "COMMAND" in bare.stdout
