"""The README's Python examples run as written (a README that lies is a bug)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
# Runnable examples: every python block except the bundle's own source file.
EXAMPLES = [body for marker, body in re.findall(r"(<!-- bundle-file: \S+ -->\n)?```python\n(.*?)```", README, re.S)
            if not marker]


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=600,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    expected = re.findall(r"^print\(.*\)\s+# (.*)$", code, re.M)
    assert len(printed) >= len(expected)
    for line, want in zip(printed[-len(expected):] if expected else [], expected, strict=True):
        assert line.strip() == want.strip()
