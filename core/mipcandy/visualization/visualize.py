"""Look at one image, with its label and prediction over it: figures for notebooks, PNGs for reports.

Both functions take tensors or arrays, 2D ``(H, W)`` / ``(C, H, W)`` or 3D ``(C, D, H, W)`` (cut at the axial slice
through the largest foreground, as the training previews are), and class ids ``(H, W)`` or ``(1, *spatial)``. They
return a matplotlib ``Figure`` (shown inline by Jupyter) and write it as a PNG with ``save_as``. Classes take
colour-blind-safe colours (:func:`~mipcandy.visualization.palette.class_colours`) and are named in a legend.
"""
from __future__ import annotations

import os
from typing import Any

from matplotlib.figure import Figure

from mipcandy.visualization._figure import save_figure
from mipcandy.visualization.blend import as_rgb
from mipcandy.visualization.blend import overlay as blend
from mipcandy.visualization.palette import class_colours
from mipcandy.visualization.preview import ClassNames, class_legend, compose, take_slice, to_numpy


def _with_channel(array: Any | None, ndim: int) -> Any | None:
    """Add the leading channel axis to an array given without one (``(H, W)`` image or label)."""
    if array is None:
        return None
    values = to_numpy(array)
    return values[None] if values.ndim == ndim else values


def _figure(image: Any, label: Any | None, prediction: Any | None, *, with_image: bool,
            class_names: ClassNames | None, title: str | None, opacity: float,
            save_as: str | os.PathLike[str] | None) -> Figure:
    """The panels: optionally the image, then each given label map over it; saved when asked."""
    values = to_numpy(image)
    values = values[None] if values.ndim == 2 else values
    spatial_ndim = values.ndim - 1
    view = take_slice(values, _with_channel(label, spatial_ndim), _with_channel(prediction, spatial_ndim),
                      title or "image")
    maps = {name: ids for name, ids in (("label", view.label), ("prediction", view.prediction)) if ids is not None}
    palette = class_colours(max((int(ids.max(initial=0)) for ids in maps.values()), default=0) + 1)
    panels = [(f"image ({view.channels})" if view.channels else "image", as_rgb(view.image))] if with_image else []
    panels += [(f"{name} over image", blend(view.image, ids, opacity=opacity, palette=palette))
               for name, ids in maps.items()]
    header = ", ".join(filter(None, (title, view.description)))
    figure = compose(panels, header, class_legend(list(maps.values()), palette, class_names) if maps else [])
    if save_as is not None:
        save_figure(figure, save_as)
    return figure


def visualize2d(image: Any, label: Any | None = None, prediction: Any | None = None, *,
                class_names: ClassNames | None = None, title: str | None = None, opacity: float = 0.4,
                save_as: str | os.PathLike[str] | None = None) -> Figure:
    """The image, then the label and the prediction over it, side by side.

    :param opacity: weight of the class colour over the image.
    """
    return _figure(image, label, prediction, with_image=True, class_names=class_names, title=title,
                   opacity=opacity, save_as=save_as)


def overlay(image: Any, label: Any, *, class_names: ClassNames | None = None, title: str | None = None,
            opacity: float = 0.4, save_as: str | os.PathLike[str] | None = None) -> Figure:
    """``label`` over ``image`` in one panel, each class in its own colour, with a legend.

    The blended RGB array alone is :func:`mipcandy.visualization.blend.overlay`.
    """
    return _figure(image, label, None, with_image=False, class_names=class_names, title=title, opacity=opacity,
                   save_as=save_as)
