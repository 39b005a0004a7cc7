"""Figure creation and atomic PNG saving without pyplot (no global state, safe outside the main thread)."""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mipcandy.atomic import atomic_path

DPI = 100
# zlib level 1: several times faster than the default 6, files a little larger; previews are rewritten every epoch.
_PNG_OPTIONS = {"compress_level": 1}


def new_figure(width_px: float, height_px: float) -> Figure:
    """A Figure of the given pixel size at :data:`DPI`, attached to its own Agg canvas."""
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``figure`` as a PNG at ``path`` atomically (a reader never sees a half-written file)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, pil_kwargs=_PNG_OPTIONS)
