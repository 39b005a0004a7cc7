"""Worst-case previews: slice choice, overlay colours, palette, and real PNG files read back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from matplotlib.image import imread

from mipcandy.data.io import load_image
from mipcandy.visualization import (
    boundary,
    choose_slice,
    label_palette,
    largest_foreground_slice,
    save_preview,
    window,
)
from mipcandy.visualization.blend import overlay

RNG = np.random.default_rng(3)


def _volume_with_known_slice() -> tuple[np.ndarray, int]:
    """Label (1, 12, 16, 16): slices 2, 7, 9 hold 10, 40 and 30 foreground voxels at random places."""
    label = np.zeros((1, 12, 16, 16), dtype=np.int64)
    for index, count in ((2, 10), (7, 40), (9, 30)):
        flat = label[0, index].reshape(-1)
        flat[RNG.choice(flat.size, count, replace=False)] = RNG.integers(1, 4, count)
    return label, 7


def test_largest_foreground_slice() -> None:
    label, expected = _volume_with_known_slice()
    assert largest_foreground_slice(label) == expected
    assert largest_foreground_slice(torch.from_numpy(label[0])) == expected  # (D, H, W) tensor
    assert largest_foreground_slice(np.zeros((5, 4, 4))) is None
    with pytest.raises(ValueError, match="3D label"):
        largest_foreground_slice(np.zeros((4, 4)))


def test_slice_choice_falls_back_to_prediction_then_middle() -> None:
    label, expected = _volume_with_known_slice()
    prediction = np.zeros_like(label)
    prediction[0, 4, :3, :3] = 1
    assert choose_slice(label, prediction) == (expected, "largest label foreground")
    assert choose_slice(np.zeros_like(label), prediction) == (4, "largest prediction foreground")
    assert choose_slice(None, prediction)[0] == 4
    assert choose_slice(None, np.zeros_like(label)) == (6, "middle slice, no foreground")


def test_window_clips_outliers_by_percentile() -> None:
    image = RNG.normal(100.0, 10.0, (64, 64))
    image[0, 0], image[0, 1] = 1e6, np.nan
    shown = window(image)
    assert shown.min() == 0.0 and shown.max() == 1.0
    low, high = np.nanpercentile(image, (0.5, 99.5))
    inside = (image > low) & (image < high)
    np.testing.assert_allclose(shown[inside], (image[inside] - low) / (high - low))
    assert (window(np.full((4, 4), 7.0)) == 0).all()


def test_overlay_keeps_background_and_tints_foreground() -> None:
    grey = RNG.uniform(0.2, 0.8, (20, 20))
    label = np.zeros((20, 20), dtype=np.int64)
    label[2:8, 2:8], label[10:18, 5:15] = 1, 3
    palette = label_palette(4)
    rgb = overlay(grey, label, opacity=0.4, outline=False, palette=palette)
    assert rgb.shape == (20, 20, 3) and 0.0 <= rgb.min() and rgb.max() <= 1.0
    background = label == 0
    for channel in range(3):  # background: exactly the input's grey value
        np.testing.assert_array_equal(rgb[background][:, channel], grey[background])
    for class_id in (1, 3):  # foreground: pulled 40 % of the way to the class colour, no longer grey
        pixels, colour = rgb[label == class_id], palette[class_id]
        assert (np.ptp(pixels, axis=1) > 0.05).all()
        np.testing.assert_allclose(np.abs(pixels - colour), 0.6 * np.abs(grey[label == class_id][:, None] - colour))


def test_overlay_outline_is_full_colour() -> None:
    label = np.zeros((10, 10), dtype=np.int64)
    label[2:7, 2:7] = 2
    edges = boundary(label)
    assert edges.sum() == 5 * 5 - 3 * 3 and not edges[3:6, 3:6].any()
    rgb = overlay(np.full((10, 10), 0.5), label)
    np.testing.assert_array_equal(rgb[edges], np.tile(label_palette(3)[2], (16, 1)))
    assert (rgb[3:6, 3:6] != label_palette(3)[2]).any(axis=-1).all()
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((4, 4)), np.zeros((5, 4), dtype=np.int64))


@pytest.mark.parametrize("num_ids", [2, 21, 300])
def test_palette_has_valid_distinct_colours(num_ids: int) -> None:
    palette = label_palette(num_ids)
    assert palette.shape == (num_ids, 3)
    assert (palette >= 0).all() and (palette <= 1).all()  # the reference produced negative colours here
    assert (palette[0] == 0).all()
    distinct = min(num_ids, 19)
    assert len(np.unique(palette[:distinct].round(3), axis=0)) == distinct
    foreground = palette[1:]
    assert (np.ptp(foreground, axis=1) > 0.05).all(), "a grey class colour would vanish on a grey scan"


def _png_grey(path: Path) -> bool:
    png = imread(path)[..., :3]
    return bool((np.ptp(png, axis=-1) < 0.02).all())


def test_preview_2d_writes_five_images_and_a_panel(tmp_path: Path) -> None:
    image = RNG.normal(0, 1, (1, 48, 64)).astype(np.float32)
    label = np.zeros((1, 48, 64), dtype=np.int64)
    label[0, 10:30, 10:40] = 1
    prediction = np.roll(label, 5, axis=2) * 2
    paths = save_preview(image, label, prediction, tmp_path, "case_001", prefix="unet_",
                         class_names=["background", "lesion", "other"])
    names = [path.name for path in paths]
    assert names == [f"unet_preview_{kind}.png" for kind in ("input", "label", "prediction", "expected", "actual")
                     ] + ["unet_preview.png"]
    pngs = [imread(path) for path in paths]
    assert all(png.ndim == 3 and png.shape[0] >= 256 for png in pngs)
    assert pngs[-1].shape[1] > 4 * pngs[0].shape[1]  # the panel holds every image side by side
    assert _png_grey(paths[0]) and not _png_grey(paths[3])
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_preview_without_label_and_with_rgb_input(tmp_path: Path) -> None:
    rgb = np.stack([np.full((32, 32), 0.9), np.linspace(0, 1, 32 * 32).reshape(32, 32), np.full((32, 32), 0.1)])
    rgb += RNG.normal(0, 0.01, rgb.shape)
    prediction = np.zeros((1, 32, 32), dtype=np.int64)
    paths = save_preview(torch.from_numpy(rgb).float(), None, torch.from_numpy(prediction), tmp_path, "skin")
    assert [path.name for path in paths] == ["preview_input.png", "preview_prediction.png",
                                             "preview_actual.png", "preview.png"]
    assert not _png_grey(paths[0])  # 3 channels in 2D: shown in colour, not channel 0


def test_preview_3d_multichannel_from_real_files(tmp_path: Path) -> None:
    label, _ = _volume_with_known_slice()
    modalities = RNG.normal(0, 1, (2, *label.shape[1:])).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(modalities[0]), str(tmp_path / "case_0000.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(modalities[1]), str(tmp_path / "case_0001.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(label[0].astype(np.uint8)), str(tmp_path / "case.nii.gz"))
    channels = [load_image(tmp_path / f"case_000{c}.nii.gz")[0] for c in range(2)]
    image = torch.cat(channels)
    loaded_label = load_image(tmp_path / "case.nii.gz", is_label=True)[0]
    paths = save_preview(image, loaded_label, loaded_label, tmp_path / "previews", "case", surfaces=False)
    assert len(paths) == 6 and all(imread(path).ndim == 3 for path in paths)
    assert _png_grey(paths[0])  # two channels: channel 0 in grey (the title says so), never skipped


def test_bad_input_names_the_case(tmp_path: Path) -> None:
    image = np.zeros((1, 8, 8), dtype=np.float32)
    good = np.zeros((1, 8, 8), dtype=np.int64)
    with pytest.raises(ValueError, match="'c7'.*label must have shape"):
        save_preview(image, np.zeros((1, 8, 9), dtype=np.int64), good, tmp_path, "c7")
    with pytest.raises(ValueError, match="'c7'.*probabilities"):
        save_preview(image, good, np.full((1, 8, 8), 0.3), tmp_path, "c7")
    with pytest.raises(ValueError, match="'c7'.*negative"):
        save_preview(image, good - 1, good, tmp_path, "c7")
    with pytest.raises(ValueError, match="'c7'.*image must be"):
        save_preview(np.zeros(8), good, good, tmp_path, "c7")
    assert not list(tmp_path.iterdir())


def test_preview_file_names_are_shell_safe() -> None:
    from mipcandy.visualization.preview import PREVIEW_FILES

    names = [pattern.format(prefix="unet_") for pattern in PREVIEW_FILES.values()]
    assert all(name.replace("_", "").replace(".", "").isalnum() for name in names), names
