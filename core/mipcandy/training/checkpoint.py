"""The full training state in one safetensors file, written atomically.

Tensors (weights, EMA, optimizer buffers, RNG states) are stored as safetensors tensors and everything else
(scheduler, counters, history, Python's RNG state) as JSON in the file's metadata, so that one ``os.replace``
publishes a consistent state: a run killed at any moment, even mid-write, leaves either the previous state or
the new one, never a mix. Nested structures are packed with their types: tensors become ``{"__tensor__": key}``,
tuples ``{"__tuple__": [...]}`` and dicts with non-string keys (an optimizer's per-parameter state)
``{"__dict__": [[key, value], ...]}``, so that ``load_state(save_state(x)) == x``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mipcandy.atomic import atomic_path

FORMAT = "mipcandy.training-state"
VERSION = 1


def pack(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able image of ``value``; its tensors are moved into ``tensors`` under keys derived from ``path``."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        return pack(torch.from_numpy(value), path, tensors)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [pack(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [pack(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: pack(v, f"{path}.{k}", tensors) for k, v in value.items()}
        return {"__dict__": [[pack(k, f"{path}.key{i}", tensors), pack(v, f"{path}.{k}", tensors)]
                             for i, (k, v) in enumerate(value.items())]}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    raise TypeError(f"cannot store {type(value).__name__} at {path!r} in a training state: only tensors, arrays, "
                    "numbers, strings, lists, tuples and dicts are supported")


def unpack(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Invert :func:`pack`."""
    if isinstance(value, list):
        return [unpack(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(unpack(v, tensors) for v in value["__tuple__"])
        if "__dict__" in value:
            return {unpack(k, tensors): unpack(v, tensors) for k, v in value["__dict__"]}
        if "__float__" in value:
            return float(value["__float__"])
        return {k: unpack(v, tensors) for k, v in value.items()}
    return value


def save_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``state`` (a nested dict of tensors and plain values) to ``path`` in one atomic replace."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    packed = pack(dict(state), "state", tensors)
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(packed, separators=(",", ":"))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_state`; a foreign or damaged file raises ``ValueError`` naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open API
    except Exception as error:
        raise ValueError(f"{path} is not a readable training state ({error}); it may be damaged: restart the run "
                         "or recover from another experiment folder") from error
    if metadata.get("format") != FORMAT or metadata.get("version") != str(VERSION):
        raise ValueError(f"{path} is not a {FORMAT} version {VERSION} file (format {metadata.get('format')!r}, "
                         f"version {metadata.get('version')!r})")
    return unpack(json.loads(metadata["state"]), tensors)
