"""Atomic file writes: an interrupted run never leaves a half-written file behind.

Files get the permissions of any file the user creates (0666 less the umask, 0644 typically): the temporary
file is created with ``os.open`` and mode 0666, so the kernel applies the umask (``tempfile.mkstemp`` would make
it 0600, and a fixed ``chmod`` would ignore the umask), and that mode is given back to it after writing, since
some writers replace the file with one of their own (safetensors writes 0600 files).
"""
from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ATTEMPTS = 100


def _create_beside(target: Path) -> Path:
    """Create an empty, hidden temporary file next to ``target`` that keeps its suffixes, with the umask's mode."""
    suffix = "".join(target.suffixes)
    for _ in range(_ATTEMPTS):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {target}: {_ATTEMPTS} names were taken")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The temporary file lives in the same folder so that ``os.replace`` is atomic. On an
    exception the temporary file is removed and ``path`` keeps its previous content.
    Keeps the file's suffixes so that writers that dispatch on them (SimpleITK) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(target)
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
