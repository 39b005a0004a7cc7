"""Training-transparency artefacts: progress curves, per-class Dice curves and worst-case previews; figures of an
image with its label and prediction (``visualize2d``, ``overlay``) and 3D surface renders (``visualize3d``, through
the ``mipcandy[viz3d]`` extra).

Everything renders through :class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so
no global figure state leaks and no GUI backend is ever touched. Names are resolved lazily (PEP 562):
importing this package does not import matplotlib.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "ema_curve": "mipcandy.visualization.plots",
    "plot_progress": "mipcandy.visualization.plots",
    "plot_series": "mipcandy.visualization.plots",
    "plot_class_dice": "mipcandy.visualization.plots",
    "label_palette": "mipcandy.visualization.colors",
    "colorize": "mipcandy.visualization.colors",
    "class_colours": "mipcandy.visualization.palette",
    "window": "mipcandy.visualization.blend",
    "boundary": "mipcandy.visualization.blend",
    "largest_foreground_slice": "mipcandy.visualization.preview",
    "choose_slice": "mipcandy.visualization.preview",
    "save_preview": "mipcandy.visualization.preview",
    "RenderWarning": "mipcandy.visualization.preview",
    "visualize2d": "mipcandy.visualization.visualize",
    "overlay": "mipcandy.visualization.visualize",
    "visualize3d": "mipcandy.visualization.render3d",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
