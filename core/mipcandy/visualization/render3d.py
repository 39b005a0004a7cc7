"""3D views of label maps: each class as a surface mesh, label and prediction side by side, through pyvista.

pyvista is an extra (``pip install 'mipcandy[viz3d]'``) imported only here, when a render is asked for. With a
display the view is an interactive window; without one it renders off-screen to a PNG (VTK's EGL window with Mesa's
software rasteriser needs no X server). Volumes over a voxel budget are pooled by a whole factor per axis first;
the pooling keeps a coarse voxel of a class when any of its fine voxels has that class, so thin structures do not
vanish.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mipcandy.atomic import atomic_path
from mipcandy.visualization.palette import class_colours
from mipcandy.visualization.preview import ClassNames, class_name, to_numpy

DEFAULT_VOXEL_BUDGET = 1_000_000
WINDOW_SIZE = (1200, 600)


def has_display() -> bool:
    """Whether an interactive window can open (Linux needs X11 or Wayland; macOS and Windows always have one)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def pooling_factor(shape: Sequence[int], voxel_budget: int) -> int:
    """The smallest whole factor per axis that brings ``shape`` within ``voxel_budget`` voxels."""
    if voxel_budget < 1:
        raise ValueError(f"voxel_budget must be at least 1, got {voxel_budget}")
    factor = max(1, math.ceil((math.prod(shape) / voxel_budget) ** (1 / len(shape))))
    while math.prod(math.ceil(n / factor) for n in shape) > voxel_budget:
        factor += 1
    return factor


def pool_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """``mask`` on a grid ``factor`` times coarser per axis: a coarse voxel is set when any fine voxel is."""
    if factor == 1:
        return mask
    padded = np.pad(mask, [(0, -n % factor) for n in mask.shape])
    blocks = padded.reshape([m for n in padded.shape for m in (n // factor, factor)])
    return blocks.any(axis=tuple(range(1, 2 * mask.ndim, 2)))


def _label_volume(name: str, array: Any) -> np.ndarray:
    volume = to_numpy(array)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(f"visualize3d: {name} must be (D, H, W) or (1, D, H, W) class ids, got shape {volume.shape}")
    if volume.dtype.kind == "f" and not np.array_equal(volume, np.round(volume)):
        raise ValueError(f"visualize3d: {name} holds fractional values; pass class ids (argmax over the channels)")
    return volume.astype(np.int64)


def _surface(pv: Any, mask: np.ndarray, spacing: Sequence[float], smooth: bool) -> Any:
    """The boundary of ``mask`` as a triangle mesh (closed at the volume's edges by a zero border)."""
    padded = np.pad(mask, 1).astype(np.float32)
    grid = pv.ImageData(dimensions=padded.shape, spacing=tuple(spacing), origin=tuple(-s for s in spacing))
    grid.point_data["mask"] = padded.ravel(order="F")
    surface = grid.contour([0.5], scalars="mask")
    return surface.smooth_taubin(n_iter=20, pass_band=0.1) if smooth and surface.n_points else surface


def visualize3d(label: Any, prediction: Any | None = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                class_names: ClassNames | None = None, voxel_budget: int = DEFAULT_VOXEL_BUDGET,
                save_as: str | os.PathLike[str] | None = None, show: bool | None = None, title: str | None = None,
                smooth: bool = True, window_size: tuple[int, int] = WINDOW_SIZE) -> Path | None:
    """Render ``label`` (and ``prediction`` beside it) as one surface per class, in colour-blind-safe colours.

    :param label: class ids ``(D, H, W)`` or ``(1, D, H, W)``, tensor or array.
    :param prediction: class ids of the same shape, shown in a second, linked view.
    :param spacing: voxel size per axis, so that anisotropic scans keep their proportions.
    :param voxel_budget: volumes with more voxels are pooled (see the module's docstring) before meshing.
    :param save_as: write the view to this PNG (off-screen, or when the window closes).
    :param show: open an interactive window; ``None`` opens one when a display exists. Without a display the view
        is rendered off-screen and ``save_as`` is required.
    :return: the PNG written, or ``None``.
    """
    volumes = [("label", _label_volume("label", label))]
    if prediction is not None:
        volumes.append(("prediction", _label_volume("prediction", prediction)))
        if volumes[1][1].shape != volumes[0][1].shape:
            raise ValueError(f"visualize3d: label {volumes[0][1].shape} and prediction {volumes[1][1].shape} differ "
                             f"in shape")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"visualize3d: spacing must be three positive sizes, got {tuple(spacing)}")
    interactive = has_display() if show is None else show
    if interactive and not has_display():
        raise RuntimeError("visualize3d: no display to show a window on; pass save_as='view.png' (and show=False)")
    if not interactive and save_as is None:
        raise ValueError("visualize3d: without a display the view is rendered off-screen; pass save_as='view.png'")
    if not has_display():
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # no X server: render through EGL
    import pyvista as pv

    factor = pooling_factor(volumes[0][1].shape, voxel_budget)
    coarse_spacing = [s * factor for s in spacing]
    classes = sorted(set().union(*(np.unique(ids).tolist() for _, ids in volumes)) - {0})
    colours = class_colours(max(classes, default=0) + 1)
    plotter = pv.Plotter(shape=(1, len(volumes)), off_screen=not interactive, window_size=list(window_size),
                         border=False)
    try:
        for column, (name, ids) in enumerate(volumes):
            plotter.subplot(0, column)
            plotter.set_background("white")
            drawn = 0
            sizes = {class_id: int(np.count_nonzero(ids == class_id)) for class_id in classes}
            for class_id in classes:
                mesh = _surface(pv, pool_mask(ids == class_id, factor), coarse_spacing, smooth)
                if mesh.n_points:
                    # the largest structure is see-through, so that what lies inside it keeps its own colour
                    see_through = len(classes) > 1 and sizes[class_id] == max(sizes.values())
                    plotter.add_mesh(mesh, color=colours[class_id], opacity=0.3 if see_through else 1.0,
                                     smooth_shading=True)
                    drawn += 1
            caption = name if drawn else f"{name}: no foreground"
            if column == 0 and title:
                caption = f"{title}\n{caption}"
            plotter.add_text(caption, font_size=11, color="black")
            plotter.view_isometric()
        if classes:
            plotter.add_legend([[class_name(c, class_names), colours[c]] for c in classes], bcolor="white",
                               size=(0.22, 0.06 * len(classes) + 0.04), loc="lower right", face="rectangle")
        if factor > 1:
            plotter.add_text(f"pooled {factor}x per axis", position="lower_left", font_size=8, color="grey")
        if len(volumes) > 1:
            plotter.link_views()
        if interactive:
            plotter.show(screenshot=str(save_as) if save_as is not None else None)
        else:
            with atomic_path(save_as) as tmp:
                plotter.screenshot(str(tmp))
    finally:
        plotter.close()
    return None if save_as is None else Path(save_as)
