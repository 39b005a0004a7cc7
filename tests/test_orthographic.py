"""Three orthogonal slices: through a given voxel, the label's foreground centroid, or the centre."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mipcandy.data.orthographic import orthographic_views


def test_slices_through_a_point_are_numpy_slices() -> None:
    volume = torch.arange(2 * 5 * 6 * 7, dtype=torch.float32).reshape(2, 5, 6, 7)
    views = orthographic_views(volume, (1, 4, 2))
    array = volume.numpy()
    assert np.array_equal(views.hw.numpy(), array[:, 1, :, :])
    assert np.array_equal(views.dw.numpy(), array[:, :, 4, :])
    assert np.array_equal(views.dh.numpy(), array[:, :, :, 2])
    assert views.point == (1, 4, 2)


def test_label_default_is_the_foreground_centroid_as_scipy_computes_it() -> None:
    label = torch.zeros(1, 20, 24, 28, dtype=torch.long)
    label[0, 2:7, 10:20, 3:6] = 1
    label[0, 12:14, 1:3, 20:27] = 2
    centroid = ndimage.center_of_mass(label[0].numpy() > 0)  # independent reference
    assert orthographic_views(label).point == tuple(int(round(c)) for c in centroid)
    assert orthographic_views(label[0] > 0).point == orthographic_views(label).point


def test_image_and_empty_label_default_to_the_centre() -> None:
    assert orthographic_views(torch.rand(9, 10, 11)).point == (4, 5, 5)
    assert orthographic_views(torch.zeros(1, 9, 10, 11, dtype=torch.uint8)).point == (4, 5, 5)


def test_bad_input_is_explained() -> None:
    with pytest.raises(ValueError, match="3D volume"):
        orthographic_views(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="inside the volume"):
        orthographic_views(torch.zeros(4, 5, 6), (4, 0, 0))
    with pytest.raises(ValueError, match="three voxel indices"):
        orthographic_views(torch.zeros(4, 5, 6), (1, 1))
