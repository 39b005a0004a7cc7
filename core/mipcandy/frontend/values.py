"""Event values as trackers take them: numbers that can be plotted, and a config flattened to dotted keys."""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The real, finite numbers of ``metrics`` as floats; text (the worst case's id), NaN (no validation that
    epoch) and booleans are left out."""
    return {key: float(value) for key, value in metrics.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"options.lr": "0.01", ...}``: nested mappings joined with dots, other values as text (lists as JSON)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=repr) if isinstance(value, list | tuple | Mapping) else str(value)
    return flat


def experiment_group(folder: Path, root: Path) -> str:
    """Where an experiment sits under the root, without its timestamp: ``Dataset001/unet/fold_0``.

    Trackers group the runs of one dataset, bundle and fold under this name.
    """
    try:
        parts = folder.resolve().parent.relative_to(root.resolve()).parts
    except ValueError:
        parts = (folder.parent.name,)
    return "/".join(parts) or root.resolve().name or "mipcandy"
