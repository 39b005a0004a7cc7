"""Preview images of one case: input, label, prediction and the two overlays (expected, actual).

The trainer renders the worst validation case after each validation. 3D cases show the axial slice (first
spatial axis) through the largest label foreground; multi-channel inputs show channel 0 (or RGB for a 3-channel
2D image) and say so in the title. Class colours are colour-blind safe (:mod:`~mipcandy.visualization.palette`).
3D cases also get a surface render of label and prediction side by side when pyvista is installed
(``mipcandy[viz3d]``); without it, or where it cannot render, that one image is skipped and training goes on.
"""
from __future__ import annotations

import math
import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mipcandy.visualization._figure import new_figure, save_figure
from mipcandy.visualization.blend import as_rgb, overlay, window
from mipcandy.visualization.colors import colorize
from mipcandy.visualization.palette import class_colours

ClassNames = Sequence[str] | Mapping[int, str]

# file name per preview kind (no spaces or parentheses: safe in shells and URLs); "{prefix}" lets bundles avoid
# clashes
PREVIEW_FILES: dict[str, str] = {
    "input": "{prefix}preview_input.png",
    "label": "{prefix}preview_label.png",
    "prediction": "{prefix}preview_prediction.png",
    "expected": "{prefix}preview_expected.png",
    "actual": "{prefix}preview_actual.png",
    "combined": "{prefix}preview.png",
    "surfaces": "{prefix}preview_3d.png",
}
PREVIEW_VOXEL_BUDGET = 250_000  # voxels the 3D preview renders (a few tenths of a second on a CPU)
_TITLES: dict[str, str] = {"label": "label", "prediction": "prediction",
                           "expected": "expected (label over input)", "actual": "actual (prediction over input)"}

_PANEL_MIN_PX, _PANEL_MAX_PX = 256, 640
_TITLE_PX, _HEADER_PX, _LINE_PX, _GAP_PX, _LEGEND_PX, _LEGEND_ROW_PX = 22, 30, 14, 12, 140, 18


class RenderWarning(RuntimeWarning):
    """The 3D preview could not be rendered (no OpenGL); the 2D previews are written and training goes on."""


def to_numpy(array: Any) -> np.ndarray:
    """A tensor (any device, any dtype) or array-like as a NumPy array."""
    if hasattr(array, "detach"):
        array = array.detach().cpu()
        if array.is_floating_point():
            array = array.float()
        return array.numpy()
    return np.asarray(array)


def largest_foreground_slice(label: Any) -> int | None:
    """Index along the first spatial axis of the slice with the most foreground, or ``None`` if all background.

    :param label: a 3D label ``(1, D, H, W)`` or ``(D, H, W)``; ties go to the lowest index.
    """
    volume = to_numpy(label)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(f"largest_foreground_slice expects a 3D label (1, D, H, W) or (D, H, W), got shape "
                         f"{volume.shape}")
    counts = np.count_nonzero(volume.reshape(volume.shape[0], -1), axis=1)
    return int(counts.argmax()) if counts.any() else None


def choose_slice(label: Any | None, prediction: Any) -> tuple[int, str]:
    """The axial slice a 3D preview shows, and why: the largest label foreground, else the largest predicted
    foreground, else the middle slice.

    :param label: ``(1, D, H, W)`` or ``(D, H, W)`` class ids, or ``None``.
    :param prediction: the predicted class ids, same layout.
    """
    for source, ids in (("label", label), ("prediction", prediction)):
        index = None if ids is None else largest_foreground_slice(ids)
        if index is not None:
            return index, f"largest {source} foreground"
    depth = to_numpy(prediction).shape[-3]
    return depth // 2, "middle slice, no foreground"


@dataclass(frozen=True)
class CaseView:
    """The 2D view of a case: display image in [0, 1], label maps, and how they were taken from the case."""

    image: np.ndarray
    label: np.ndarray | None
    prediction: np.ndarray | None
    description: str
    channels: str


def _check_label(name: str, array: np.ndarray, spatial: tuple[int, ...], case_id: str) -> np.ndarray:
    if array.shape != (1, *spatial):
        raise ValueError(f"preview of case {case_id!r}: {name} must have shape (1, {', '.join(map(str, spatial))}) "
                         f"to match the image, got {array.shape}")
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise ValueError(f"preview of case {case_id!r}: {name} holds fractional values; pass a label map of class "
                         f"ids (argmax over the channels), not probabilities")
    ids = array[0].astype(np.int64)
    if ids.min(initial=0) < 0:
        raise ValueError(f"preview of case {case_id!r}: {name} holds negative class ids ({ids.min()})")
    return ids


def take_slice(image: Any, label: Any | None, prediction: Any | None, case_id: str) -> CaseView:
    """Validate shapes and reduce the case to the 2D view a person looks at.

    :param image: ``(C, H, W)`` or ``(C, D, H, W)``; ``label`` and ``prediction``: ``(1, *spatial)`` class ids or
        ``None``. A 3D case is cut at :func:`choose_slice` (the middle slice without any label map).
    """
    volume = to_numpy(image)
    if volume.ndim not in (3, 4):
        raise ValueError(f"preview of case {case_id!r}: image must be (C, H, W) or (C, D, H, W), got shape "
                         f"{volume.shape}")
    spatial = volume.shape[1:]
    labels = None if label is None else _check_label("label", to_numpy(label), spatial, case_id)
    predicted = None if prediction is None else _check_label("prediction", to_numpy(prediction), spatial, case_id)
    description = ""
    if len(spatial) == 3:
        index, reason = (choose_slice(labels, predicted) if labels is not None or predicted is not None
                         else (spatial[0] // 2, "middle slice"))
        description = f"axial slice {index} (of 0-{spatial[0] - 1}, {reason})"
        volume = volume[:, index]
        labels = None if labels is None else labels[index]
        predicted = None if predicted is None else predicted[index]
    num_channels = volume.shape[0]
    if len(spatial) == 2 and num_channels == 3:
        display, channels = np.moveaxis(window(volume), 0, -1), "RGB"
    else:
        display = window(volume[0])
        channels = "" if num_channels == 1 else f"channel 0 of {num_channels}"
    return CaseView(display, labels, predicted, description, channels)


def class_name(class_id: int, class_names: ClassNames | None) -> str:
    if class_names is None:
        return str(class_id)
    name = class_names.get(class_id) if isinstance(class_names, Mapping) else (
        class_names[class_id] if class_id < len(class_names) else None)
    return f"{class_id} {name}" if name else str(class_id)


def class_legend(maps: Sequence[np.ndarray], palette: np.ndarray, class_names: ClassNames | None) -> list[Patch]:
    """One legend entry per foreground class present in any of ``maps``."""
    present = np.unique(np.concatenate([ids.ravel() for ids in maps]))
    return [Patch(color=palette[i], label=class_name(int(i), class_names)) for i in present if i > 0]


def compose(panels: Sequence[tuple[str, np.ndarray]], header: str, legend: Sequence[Patch]) -> Figure:
    """Lay out RGB panels side by side at about native resolution, with a header and an optional legend."""
    height, width = panels[0][1].shape[:2]
    scale = min(max(_PANEL_MIN_PX / max(height, width), 1.0), _PANEL_MAX_PX / max(height, width))
    panel_w, panel_h = width * scale, height * scale
    legend_columns = math.ceil(len(legend) / max(1, int(panel_h / _LEGEND_ROW_PX) - 1))  # a row for the title
    legend_px = _LEGEND_PX * legend_columns
    fig_w = len(panels) * (panel_w + _GAP_PX) + _GAP_PX + legend_px
    header = textwrap.fill(header, max(30, int(fig_w / 6.5)))
    header_px = _HEADER_PX + _LINE_PX * header.count("\n")
    fig_h = header_px + _TITLE_PX + panel_h + _GAP_PX
    figure = new_figure(fig_w, fig_h)
    for column, (title, rgb) in enumerate(panels):
        left = _GAP_PX + column * (panel_w + _GAP_PX)
        axes = figure.add_axes((left / fig_w, _GAP_PX / fig_h, panel_w / fig_w, panel_h / fig_h))
        axes.imshow(rgb, interpolation="nearest", aspect="auto")
        axes.set_axis_off()
        axes.set_title(title, fontsize=9)
    figure.text(_GAP_PX / fig_w, 1 - 6 / fig_h, header, fontsize=9, va="top", ha="left")
    if legend:
        figure.legend(handles=legend, loc="upper left", bbox_to_anchor=(1 - (legend_px - 6) / fig_w,
                                                                        1 - (header_px + _TITLE_PX) / fig_h),
                      fontsize=8, title="class", title_fontsize=8, frameon=False,
                      ncols=legend_columns)
    return figure


def save_preview(image: Any, label: Any | None, prediction: Any, folder: str | os.PathLike[str], case_id: str,
                 *, prefix: str = "", class_names: ClassNames | None = None, combined: bool = True,
                 surfaces: bool = True) -> list[Path]:
    """Write the preview PNGs of one case and return their paths.

    Writes ``input``, ``label``, ``prediction``, ``expected`` (label over input) and ``actual`` (prediction over
    input), each as its own file (see :data:`PREVIEW_FILES`), plus, with ``combined``, all of them side by side
    in one figure. Without a label, ``label`` and ``expected`` are skipped. A 3D case with ``surfaces`` also gets
    ``preview_3d.png`` (label and prediction as surfaces, see :func:`~mipcandy.visualization.render3d.visualize3d`)
    when pyvista is installed.

    :param image: ``(C, *spatial)`` float tensor or array, 2D or 3D.
    :param label: ``(1, *spatial)`` integer class ids, or ``None``.
    :param prediction: ``(1, *spatial)`` integer class ids.
    :param class_names: names per class id (a sequence indexed by id, or a mapping), shown in the legend.
    """
    view = take_slice(image, label, prediction, case_id)
    assert view.prediction is not None
    maps = {"prediction": view.prediction} if view.label is None else {"label": view.label,
                                                                        "prediction": view.prediction}
    num_ids = max(int(ids.max(initial=0)) for ids in maps.values()) + 1
    palette = class_colours(num_ids)
    legend = class_legend(list(maps.values()), palette, class_names)
    panels = {"input": as_rgb(view.image)}
    panels.update({kind: colorize(ids, palette) for kind, ids in maps.items()})
    overlays = {"expected": "label", "actual": "prediction"}
    panels.update({kind: overlay(view.image, maps[source], palette=palette)
                   for kind, source in overlays.items() if source in maps})
    titles = {"input": f"input ({view.channels})" if view.channels else "input", **_TITLES}
    header = f"case {case_id}" + (f", {view.description}" if view.description else "")
    folder = Path(folder)
    written: list[Path] = []
    for kind, rgb in panels.items():
        path = folder / PREVIEW_FILES[kind].format(prefix=prefix)
        save_figure(compose([(titles[kind], rgb)], header, legend if kind != "input" else []), path)
        written.append(path)
    if combined:
        path = folder / PREVIEW_FILES["combined"].format(prefix=prefix)
        save_figure(compose([(titles[kind], rgb) for kind, rgb in panels.items()], header, legend), path)
        written.append(path)
    if surfaces and to_numpy(image).ndim == 4:
        path = folder / PREVIEW_FILES["surfaces"].format(prefix=prefix)
        if _render_surfaces(label, prediction, path, case_id, class_names):
            written.append(path)
    return written


_warned: set[str] = set()


def _render_surfaces(label: Any | None, prediction: Any, path: Path, case_id: str,
                     class_names: ClassNames | None) -> bool:
    """The 3D preview, if pyvista is installed and can render here; a failure is reported once per process."""
    from importlib.util import find_spec

    if find_spec("pyvista") is None:
        return False
    from mipcandy.visualization.render3d import visualize3d

    try:
        visualize3d(label if label is not None else prediction, prediction if label is not None else None,
                    class_names=class_names, voxel_budget=PREVIEW_VOXEL_BUDGET, save_as=path, show=False,
                    title=f"case {case_id}")
    except Exception as error:
        if "render" not in _warned:
            _warned.add("render")
            warnings.warn(f"the 3D preview could not be rendered ({type(error).__name__}: {error}); the 2D previews "
                          f"are written and training goes on", RenderWarning, stacklevel=3)
        return False
    return True
