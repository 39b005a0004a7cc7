"""The command line's error policy: an expected failure is one message on stderr and exit status 2, no traceback.

Expected failures are problems with what the user gave or has: bad input (``ValueError``, ``DatasetError``),
files that are missing, unreadable or unwritable, a full disk (``OSError``), a missing, broken or conflicting
bundle (``BundleError``), a corrupt checkpoint (safetensors' ``SafetensorError``), running out of memory, and any
exception raised inside a bundle's own code (named with the bundle, since the fix is in the bundle or the options
given to it). Anything else is reported as a likely bug, with exit status 1. ``--debug`` or ``CANDY_DEBUG=1``
lets every exception through, so that Python prints its traceback. Ctrl+C exits 130 without a traceback; a closed
pipe (``candy evaluate ... | head``) ends the command quietly with status 1, as rich's console does.
"""
from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

EXIT_BUG = 1
EXIT_FAILURE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 1  # what rich's console exits with when its reader goes away
DEBUG_VARIABLE = "CANDY_DEBUG"
_TRUE = {"1", "true", "yes", "on"}
_debug: ContextVar[bool] = ContextVar("candy_debug", default=False)

_OS_HINTS = {
    errno.EACCES: "check the permissions of that path, or choose a folder you can write to",
    errno.EPERM: "check the permissions of that path, or choose a folder you can write to",
    errno.EROFS: "that file system is read-only; choose a folder on a writable disk",
    errno.ENOSPC: "the disk is full; free some space or choose a folder on another disk",
    errno.EDQUOT: "your disk quota is used up; free some space or choose a folder on another disk",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EEXIST: "a file of that name is in the way of a folder; choose another path",
    errno.ENOTDIR: "part of that path is a file, not a folder; choose another path",
}


@dataclass(frozen=True)
class Failure:
    """What the command line says about an exception, and the exit status it returns."""

    message: str
    status: int


def debug_enabled() -> bool:
    """Whether exceptions should show their traceback (``--debug`` or ``CANDY_DEBUG`` set to 1/true/yes)."""
    return _debug.get() or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in _TRUE


@contextmanager
def debugging(enabled: bool) -> Iterator[None]:
    """Let exceptions through with their traceback inside the block when ``enabled`` (``--debug``)."""
    token = _debug.set(enabled or _debug.get())
    try:
        yield
    finally:
        _debug.reset(token)


def describe(error: Exception) -> Failure:
    """The message and exit status for ``error`` (see the module docstring for the policy)."""
    bundle = _raising_bundle(error)
    if bundle is not None:
        return Failure(bundle, EXIT_FAILURE)
    from mipcandy.plugins import BundleError

    text = str(error) or type(error).__name__
    if isinstance(error, BundleError | ValueError | NotImplementedError):
        return Failure(text, EXIT_FAILURE)
    if isinstance(error, OSError):
        hint = _OS_HINTS.get(error.errno or 0)
        return Failure(f"{text}; {hint}" if hint else text, EXIT_FAILURE)
    if _is_safetensors_error(error):
        return Failure(f"a checkpoint or state file is not readable safetensors ({text}); it is truncated or corrupt: "
                       "use another checkpoint (--checkpoint latest) or train again", EXIT_FAILURE)
    if isinstance(error, MemoryError) or _is_torch_out_of_memory(error):
        return Failure(f"out of memory ({text.splitlines()[0]}); use a smaller --batch-size or another --device",
                       EXIT_FAILURE)
    return Failure(f"unexpected {type(error).__name__}: {text}\nThis is probably a bug in MIP Candy: rerun with "
                   f"--debug (or {DEBUG_VARIABLE}=1) to see the traceback, and report it.", EXIT_BUG)


def reports_failures(prog: str) -> Callable[[Callable[[Any], int]], Callable[[Any], int]]:
    """Decorate a command's ``run(args) -> int`` with the error policy; messages start with ``prog``."""

    def decorate(run: Callable[[Any], int]) -> Callable[[Any], int]:
        @functools.wraps(run)
        def guarded(args: Any) -> int:
            try:
                return int(run(args) or 0)
            except BrokenPipeError:
                return _broken_pipe()
            except KeyboardInterrupt:
                if debug_enabled():
                    raise
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except Exception as error:
                if debug_enabled():
                    raise
                failure = describe(error)
                print(f"{prog}: {failure.message}", file=sys.stderr)
                return failure.status

        return guarded

    return decorate


def _broken_pipe() -> int:
    """The reader of stdout went away (``| head``): send what is still buffered nowhere, and stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured by a test)
        pass
    return EXIT_BROKEN_PIPE


def _is_safetensors_error(error: Exception) -> bool:
    module = sys.modules.get("safetensors")
    return module is not None and isinstance(error, module.SafetensorError)


def _is_torch_out_of_memory(error: Exception) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def _raising_bundle(error: Exception) -> str | None:
    """A message naming the bundle when ``error`` was raised inside a loaded bundle's code, else ``None``.

    The bundle is found by the package of the innermost traceback frame that belongs to one; nothing is imported
    when no bundle was ever loaded.
    """
    if "mipcandy.plugins" not in sys.modules:
        return None
    from mipcandy.plugins import get_plugin_manager

    packages = {record.module.split(":")[0].split(".")[0]: record for record in get_plugin_manager().records
                if record.kind == "bundle" and record.module}
    packages.pop("mipcandy", None)
    for module, file, line in reversed(list(_frames(error.__traceback__))):
        record = packages.get(module.split(".")[0])
        if record is not None:
            owner = " ".join(filter(None, (record.distribution, record.version)))
            where = f"{Path(file).name}:{line}"
            return (f"bundle {record.name!r}{f' ({owner})' if owner else ''} failed in its own code ({where}): "
                    f"{type(error).__name__}: {error}\nCheck the options given to it (--bundle-option); if they "
                    f"are right, report this to the bundle's authors (--debug shows the traceback).")
    return None


def _frames(tb: TracebackType | None) -> Iterator[tuple[str, str, int]]:
    """(module name, file, line) of each traceback frame, outermost first."""
    while tb is not None:
        yield tb.tb_frame.f_globals.get("__name__", ""), tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next
