"""3D surface renders through pyvista, off-screen to real PNGs; pooling over the voxel budget; 3D training previews
with and without pyvista."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from mipcandy.visualization import RenderWarning, save_preview, visualize3d
from mipcandy.visualization.palette import class_colours
from mipcandy.visualization.render3d import pool_mask, pooling_factor


def spheres(shift: int = 0) -> np.ndarray:
    """A (1, 24, 32, 40) label: a large sphere (class 1) and a small one beside it (class 2), shifted along the last
    axis."""
    z, y, x = np.mgrid[:24, :32, :40]
    label = np.zeros((1, 24, 32, 40), dtype=np.int64)
    label[0][(z - 12) ** 2 + (y - 16) ** 2 + (x - 14 - shift) ** 2 < 9 ** 2] = 1
    label[0][(z - 12) ** 2 + (y - 16) ** 2 + (x - 29 - shift) ** 2 < 4 ** 2] = 2
    return label


def coloured_share(png: np.ndarray, colour: np.ndarray) -> float:
    """Share of saturated pixels with the hue of ``colour`` (shading and transparency over white keep the hue)."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(png[..., :3], 0, 1)).reshape(-1, 3)
    hue = rgb_to_hsv(colour)[0]
    distance = np.minimum(np.abs(hsv[:, 0] - hue), 1 - np.abs(hsv[:, 0] - hue))
    return float(((hsv[:, 1] > 0.3) & (distance < 0.03)).mean())


@pytest.fixture(autouse=True)
def _pyvista() -> None:
    pytest.importorskip("pyvista")


def test_label_and_prediction_render_off_screen_to_different_pngs(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    label = spheres()
    same = visualize3d(label, label, save_as=tmp_path / "same.png", class_names={1: "organ", 2: "lesion"})
    shifted = visualize3d(torch.from_numpy(label), torch.from_numpy(spheres(shift=4)), save_as=tmp_path / "off.png")
    same_png, off_png = imread(same), imread(shifted)
    assert same_png.shape[:2] == (600, 1200) and off_png.shape == same_png.shape
    colours = class_colours(3)
    assert coloured_share(same_png, colours[1]) > 0.05  # each class's surface is drawn in its colour
    assert coloured_share(same_png, colours[2]) > 0.005
    width = same_png.shape[1] // 2
    left, right = same_png[:, :width, :3], same_png[:, width:, :3]
    assert np.abs(left[60:540] - right[60:540]).mean() < 0.02  # equal maps: equal halves (below the captions)
    assert np.abs(off_png[60:540, width:, :3] - same_png[60:540, width:, :3]).mean() > 0.01
    assert not list(tmp_path.glob(".*tmp*"))


def test_without_a_display_a_file_is_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ValueError, match="pass save_as"):
        visualize3d(spheres())
    with pytest.raises(RuntimeError, match="no display"):
        visualize3d(spheres(), show=True, save_as=tmp_path / "x.png")
    with pytest.raises(ValueError, match="differ in shape"):
        visualize3d(spheres(), spheres()[:, :12], save_as=tmp_path / "x.png")


def test_pooling_keeps_thin_structures_and_meets_the_budget() -> None:
    from skimage.measure import block_reduce

    rng = np.random.default_rng(2)
    mask = rng.random((37, 50, 41)) > 0.995
    for budget in (1_000_000, 20_000, 1_000, 7):
        factor = pooling_factor(mask.shape, budget)
        pooled = pool_mask(mask, factor)
        assert pooled.size <= budget and (factor == 1 or pool_mask(mask, factor - 1).size > budget)
        np.testing.assert_array_equal(pooled, block_reduce(mask, (factor,) * 3, np.max, cval=False))
    line = np.zeros((64, 64, 64), dtype=bool)
    line[31, 17, :] = True  # one voxel thick: striding would lose it
    assert pool_mask(line, 4).sum() == 16


def test_a_3d_training_preview_adds_the_surface_render(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(0, 1, (1, 24, 32, 40)).astype(np.float32)
    first = save_preview(image, spheres(), spheres(), tmp_path / "a", "case_1")
    second = save_preview(image, spheres(), spheres(shift=4), tmp_path / "b", "case_1")
    assert first[-1].name == "preview_3d.png" and len(first) == 7
    assert not np.array_equal(imread(first[-1]), imread(second[-1]))


def test_without_pyvista_or_without_opengl_the_2d_previews_still_come(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.zeros((1, 24, 32, 40), dtype=np.float32)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "pyvista", None)  # as if not installed: find_spec answers None
        paths = save_preview(image, spheres(), spheres(), tmp_path / "a", "case_1")
    assert len(paths) == 6 and not (tmp_path / "a" / "preview_3d.png").exists()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no EGL device")

    monkeypatch.setattr("mipcandy.visualization.render3d.visualize3d", broken)
    monkeypatch.setattr("mipcandy.visualization.preview._warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for folder in ("b", "c"):
            assert len(save_preview(image, spheres(), spheres(), tmp_path / folder, "case_1")) == 6
    reports = [w for w in caught if issubclass(w.category, RenderWarning)]
    assert len(reports) == 1 and "no EGL device" in str(reports[0].message)
