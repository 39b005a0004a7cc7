"""Intensity windowing and label-over-image blending for previews."""
from __future__ import annotations

import numpy as np

from mipcandy.visualization.colors import label_palette

WINDOW_PERCENTILES = (0.5, 99.5)


def window(image: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """Scale intensities to [0, 1] between two percentiles (of the finite values), clipping outliers.

    Robust to the bright spikes and padding values that make a min-max scaling unreadable. A constant image
    (or one with no finite value) maps to 0.
    """
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape)
    low, high = np.percentile(finite, percentiles)
    if high <= low:
        return np.zeros(values.shape)
    return np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0.0, 1.0)


def as_rgb(image2d: np.ndarray) -> np.ndarray:
    """A display image in [0, 1] as ``(H, W, 3)``: grey ``(H, W)`` is replicated, RGB passes through."""
    return np.repeat(image2d[..., None], 3, axis=-1) if image2d.ndim == 2 else image2d


def boundary(label2d: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour of another id (or at the image border): the regions' outlines."""
    padded = np.pad(label2d, 1, mode="constant", constant_values=-1)
    centre = padded[1:-1, 1:-1]
    differs = ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre) | (padded[1:-1, :-2] != centre)
               | (padded[1:-1, 2:] != centre))
    return differs & (label2d > 0)


def overlay(image2d: np.ndarray, label2d: np.ndarray, *, opacity: float = 0.4, outline: bool = True,
            palette: np.ndarray | None = None) -> np.ndarray:
    """Blend a label map over a display image; background (id 0) stays exactly the image.

    :param image2d: ``(H, W)`` grey or ``(H, W, 3)`` RGB, already in [0, 1] (see :func:`window`).
    :param label2d: ``(H, W)`` non-negative integer ids.
    :param opacity: weight of the class colour on foreground pixels.
    :param outline: draw each region's outline in its full colour, so that boundaries stay visible where the
        tint is faint against the image.
    :param palette: colours per id (:func:`~mipcandy.visualization.colors.label_palette` by default).
    :return: ``(H, W, 3)`` float RGB in [0, 1].
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"overlay opacity must lie in [0, 1], got {opacity}")
    base = as_rgb(np.clip(np.asarray(image2d, dtype=np.float64), 0.0, 1.0))
    labels = np.asarray(label2d)
    if base.shape[:2] != labels.shape:
        raise ValueError(f"overlay: image {base.shape[:2]} and label {labels.shape} differ in size")
    if palette is None:
        palette = label_palette(int(labels.max(initial=0)) + 1)
    foreground = labels > 0
    blended = base.copy()
    blended[foreground] = (1.0 - opacity) * base[foreground] + opacity * palette[labels[foreground]]
    if outline:
        edges = boundary(labels)
        blended[edges] = palette[labels[edges]]
    return blended
