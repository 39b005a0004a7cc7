"""Colours for label ids: one qualitative palette, shared by label maps, overlays and legends."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb

# tab10's strong colours, then tab20's light variants; the greys (indices 14, 15 of tab20) are dropped because a
# grey tint is invisible over a grey-scale scan.
_TAB20 = np.asarray(colormaps["tab20"].colors, dtype=np.float64)
_QUALITATIVE = np.concatenate([np.delete(_TAB20[0::2], 7, axis=0), np.delete(_TAB20[1::2], 7, axis=0)])
_GOLDEN = 0.618033988749895


def label_palette(num_ids: int) -> np.ndarray:
    """RGB colours in [0, 1] for label ids ``0 .. num_ids - 1``, shape ``(num_ids, 3)``; id 0 (background) is black.

    Ids 1 to 18 take distinct qualitative colours; later ids step around the hue circle by the golden ratio, so
    any number of classes gets valid, well-separated colours (never a negative or out-of-range component).
    """
    if num_ids < 1:
        raise ValueError(f"label_palette needs at least one id (background), got {num_ids}")
    extra = max(0, num_ids - 1 - len(_QUALITATIVE))
    steps = np.arange(extra)
    hsv = np.stack([(0.1 + steps * _GOLDEN) % 1.0, np.where(steps % 2 == 0, 0.8, 0.55),
                    np.where(steps % 3 == 2, 0.75, 0.95)], axis=-1)
    colours = np.concatenate([np.zeros((1, 3)), _QUALITATIVE, hsv_to_rgb(hsv).reshape(-1, 3)])
    return colours[:num_ids]


def colorize(label2d: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map an integer label map ``(H, W)`` to an RGB image ``(H, W, 3)`` with ``palette`` (background black)."""
    return palette[label2d]
