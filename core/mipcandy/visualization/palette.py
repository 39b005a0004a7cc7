"""Class colours a colour-blind reader can tell apart: the Okabe-Ito palette first.

Okabe & Ito, "Color Universal Design" (2008), popularised by Wong, "Points of view: Color blindness", Nature Methods
8:441 (2011): seven colours that stay distinct under protanopia, deuteranopia and tritanopia. They take class ids 1-7
(id 0, background, is black); later ids continue with :func:`~mipcandy.visualization.colors.label_palette`'s
colours, which are distinct for normal vision but not guaranteed for colour-blind readers.
"""
from __future__ import annotations

import numpy as np

from mipcandy.visualization.colors import label_palette

OKABE_ITO: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
)


def class_colours(num_ids: int) -> np.ndarray:
    """RGB colours in [0, 1] for class ids ``0 .. num_ids - 1``, shape ``(num_ids, 3)``; id 0 is black."""
    if num_ids < 1:
        raise ValueError(f"class_colours needs at least one id (background), got {num_ids}")
    safe = np.asarray(OKABE_ITO, dtype=np.float64) / 255.0
    extra = label_palette(max(1, num_ids - len(safe)))[1:]
    return np.concatenate([np.zeros((1, 3)), safe, extra])[:num_ids]
