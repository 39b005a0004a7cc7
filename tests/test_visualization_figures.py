"""Colour-blind-safe class colours, and ``visualize2d``/``overlay`` figures rendered to real PNGs from NIfTI files."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from mipcandy.data.io import load_image
from mipcandy.visualization import class_colours, overlay, visualize2d
from mipcandy.visualization.palette import OKABE_ITO

# Machado, Oliveira & Fernandes (2009), "A physiologically-based model for simulation of color vision deficiency",
# IEEE TVCG 15(6): the severity-1.0 matrices, applied to linear RGB.
MACHADO = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def simulate(rgb: np.ndarray, matrix: list[list[float]]) -> np.ndarray:
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ np.asarray(matrix).T, 0, 1)
    return np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


def min_distance(rgb: np.ndarray) -> float:
    """The smallest CIE76 colour difference between any two colours (Lab by scikit-image)."""
    from skimage.color import rgb2lab

    lab = rgb2lab(rgb[None])[0]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(lab, 2))


def test_the_first_seven_classes_stay_apart_for_colour_blind_readers() -> None:
    pytest.importorskip("skimage")
    colours = class_colours(8)[1:]
    np.testing.assert_allclose(colours * 255, OKABE_ITO)
    # Measured: 26.4 (normal), 20.7, 17.0, 16.1 here; tab10's first seven (the previous preview colours) fall to
    # 4.6 under protanopia, i.e. two classes a protanope cannot tell apart.
    assert min_distance(colours) > 20
    for name, matrix in MACHADO.items():
        assert min_distance(simulate(colours, matrix)) > 15, name


def test_any_number_of_classes_gets_valid_distinct_colours() -> None:
    colours = class_colours(40)
    assert colours.shape == (40, 3) and (colours >= 0).all() and (colours <= 1).all() and (colours[0] == 0).all()
    assert len(np.unique(colours.round(3), axis=0)) == 40
    with pytest.raises(ValueError, match="at least one id"):
        class_colours(0)


@pytest.fixture
def case(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 3D case written as NIfTI and read back: image (1, D, H, W), label and a shifted, partly wrong prediction."""
    rng = np.random.default_rng(5)
    image = rng.normal(100, 20, (6, 40, 48)).astype(np.float32)
    label = np.zeros((6, 40, 48), dtype=np.uint8)
    label[1:5, 8:24, 8:30] = 1
    label[2:4, 26:34, 30:40] = 2
    sitk.WriteImage(sitk.GetImageFromArray(image), str(tmp_path / "case_0000.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / "case.nii.gz"))
    loaded = load_image(tmp_path / "case_0000.nii.gz")[0].numpy()
    ids = load_image(tmp_path / "case.nii.gz", is_label=True)[0].numpy()
    prediction = np.roll(ids, 6, axis=-1)
    prediction[prediction == 2] = 3
    return loaded, ids, prediction


def test_visualize2d_renders_image_label_and_prediction_with_a_legend(case, tmp_path: Path) -> None:
    image, label, prediction = case
    path = tmp_path / "figure.png"
    figure = visualize2d(image, label, prediction, class_names={1: "liver", 2: "tumour", 3: "cyst"}, title="case 3",
                         save_as=path)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["image", "label over image", "prediction over image"]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["1 liver", "2 tumour", "3 cyst"]
    assert "case 3, axial slice 2" in figure.texts[0].get_text()
    png = imread(path)[..., :3]
    assert png.shape[0] >= 256 and png.std() > 0.05
    panels = [axes.get_images()[0].get_array() for axes in figure.axes]
    assert not np.array_equal(panels[1], panels[2])  # label and prediction differ where they disagree
    assert np.ptp(panels[0], axis=-1).max() == 0  # the image panel alone is grey


def test_overlay_colours_each_class_by_the_palette(case, tmp_path: Path) -> None:
    image, label, _ = case
    figure = overlay(image[0, 2], label[0, 2], save_as=tmp_path / "overlay.png", opacity=0.6)
    (axes,) = figure.axes
    rgb = np.asarray(axes.get_images()[0].get_array())
    colours = class_colours(3)
    for class_id in (1, 2):
        inside = rgb[10:22, 10:28] if class_id == 1 else rgb[28:32, 32:38]  # away from the outlines
        mean = inside.reshape(-1, 3).mean(axis=0)
        distances = [np.linalg.norm(mean - c) for c in colours[1:]]
        assert int(np.argmin(distances)) + 1 == class_id
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["1", "2"]
    assert imread(tmp_path / "overlay.png").shape[0] >= 256


def test_bad_shapes_are_named(case) -> None:
    image, label, _ = case
    with pytest.raises(ValueError, match="label must have shape"):
        visualize2d(image, label[:, :3])
