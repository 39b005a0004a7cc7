"""Lazy package attributes (PEP 562): a package maps names to modules, and a module loads on first use.

This keeps ``import mipcandy`` (and ``candy plugins``) free of torch, and lets one data name load without
pulling in every data module. Bundles use it through the public name ``mipcandy.lazy_attributes``, so that the
package their entry point lives in stays light to import.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, resolving ``table``'s names (name -> module) on demand."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(table) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
