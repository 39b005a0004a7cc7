"""Torch resampling checked against SimpleITK's ResampleImageFilter and a separable numpy reference."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mipcandy.data.geometry import Geometry
from mipcandy.data.io import load_image, save_image
from mipcandy.data.resample import resample, resample_to_shape, target_shape

DIRECTION = (0.8, 0.0, -0.6, 0.36, 0.8, 0.48, 0.48, -0.6, 0.64)  # orthonormal, oblique
# Shapes and spacings chosen so that no output voxel centre falls exactly half-way between two input voxels
# (ties would make nearest neighbour depend on rounding noise).
SPACING = (1.3, 0.9, 1.1)
TARGET = (0.8, 1.7, 0.65)
SHAPE = (5, 7, 6)


def geometry_of(spacing: tuple[float, ...]) -> Geometry:
    ndim = len(spacing)
    direction = DIRECTION if ndim == 3 else (0.6, -0.8, 0.8, 0.6)
    return Geometry(spacing, (10.5, -3.25, 7.0)[:ndim], direction)


def sitk_resample(array: np.ndarray, geometry: Geometry, new_geometry: Geometry, shape: tuple[int, ...],
                  interpolator: int) -> np.ndarray:
    """SimpleITK's answer: sample ``array`` (spatial only) at the voxel centres of the new grid."""
    image = sitk.GetImageFromArray(array)
    geometry.apply_to(image)
    reference = sitk.Image(list(reversed(shape)), image.GetPixelID())
    new_geometry.apply_to(reference)
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), interpolator, -1.0))


def keys_cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def axis_matrix(old: int, new: int, kind: str) -> np.ndarray:
    """(new, old) interpolation weights along one axis, from the textbook definitions."""
    matrix = np.zeros((new, old))
    for out in range(new):
        source = (out + 0.5) * old / new - 0.5
        if kind == "nearest":
            matrix[out, min(int(math.floor(source + 0.5)), old - 1)] = 1
        elif kind == "linear":
            source = min(max(source, 0.0), old - 1.0)
            low = int(math.floor(source))
            matrix[out, low] += 1 - (source - low)
            matrix[out, min(low + 1, old - 1)] += source - low
        else:
            base = int(math.floor(source))
            for tap in range(base - 1, base + 3):
                matrix[out, min(max(tap, 0), old - 1)] += keys_cubic(np.array(source - tap))
    return matrix


def separable_reference(array: np.ndarray, shape: tuple[int, ...], kinds: list[str]) -> np.ndarray:
    for axis, (new, kind) in enumerate(zip(shape, kinds, strict=True)):
        array = np.moveaxis(np.tensordot(axis_matrix(array.shape[axis], new, kind), array, axes=(1, axis)), 0, axis)
    return array


def blob_labels(shape: tuple[int, ...], classes: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Smooth random regions (not salt and pepper), so resampling has structure to keep."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, len(classes), tuple(max(2, n // 2) for n in shape))
    index = np.ix_(*[np.minimum(np.arange(n) * c // n, c - 1) for n, c in zip(shape, coarse.shape, strict=True)])
    return np.asarray(classes)[coarse[index]]


# ---- shape rule, identity, validation ----------------------------------------------------------------------------


def test_shape_rule_matches_nnunet_rounding() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(v) for v in rng.integers(1, 300, 3))
        spacing = tuple(float(v) for v in rng.choice([0.5, 0.7, 1.0, 1.25, 2.5, 3.0], 3))
        target = tuple(float(v) for v in rng.choice([0.5, 0.8, 1.0, 2.0, 5.0], 3))
        expected = np.maximum(1, np.round((np.array(spacing) / np.array(target)).astype(float) * np.array(shape)))
        assert target_shape(shape, spacing, target) == tuple(int(v) for v in expected)
    assert target_shape((5,), (1.0,), (2.0,)) == (2,)  # 2.5 rounds half to even, as np.round does
    assert target_shape((3, 3), (1.0, 1.0), (100.0, 1.0)) == (1, 3)


def test_same_spacing_is_the_identity() -> None:
    image = torch.randn(2, 4, 5, 6)
    assert resample(image, SPACING, SPACING) is image
    integers = torch.arange(24).view(1, 2, 3, 4)
    as_image = resample(integers, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert as_image.dtype == torch.float32 and torch.equal(as_image, integers.float())
    assert resample(integers, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), is_label=True) is integers


def test_modes_are_checked_against_the_data_kind() -> None:
    with pytest.raises(ValueError, match="invent classes"):
        resample(torch.zeros(1, 4, 4, dtype=torch.long), (1.0, 1.0), (0.5, 0.5), is_label=True, mode="linear")
    with pytest.raises(ValueError, match="one-hot is for labels"):
        resample(torch.zeros(1, 4, 4), (1.0, 1.0), (0.5, 0.5), mode="onehot")
    with pytest.raises(ValueError, match="positive numbers"):
        resample(torch.zeros(1, 4, 4), (1.0, 1.0), (0.5, -1.0))
    with pytest.raises(ValueError, match="channel-first"):
        resample(torch.zeros(4, 4), (1.0, 1.0), (0.5, 0.5))
    with pytest.raises(ValueError, match="needs the input spacing"):
        resample_to_shape(torch.zeros(1, 4, 4, 4), (2, 2, 2), separate_z=True)


# ---- against SimpleITK -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_linear_matches_simpleitk_on_the_same_physical_grid(ndim: int) -> None:
    spacing, target, shape = SPACING[-ndim:], TARGET[-ndim:], SHAPE[-ndim:]
    image = torch.randn(2, *shape, dtype=torch.float64)
    out = resample(image, spacing, target, mode="linear")
    new_shape = target_shape(shape, spacing, target)
    assert out.shape == (2, *new_shape) and out.dtype == torch.float64
    geometry = geometry_of(spacing)
    new_geometry = geometry.resized(shape, new_shape)
    for channel in range(2):
        expected = sitk_resample(image[channel].numpy(), geometry, new_geometry, new_shape, sitk.sitkLinear)
        np.testing.assert_allclose(out[channel].numpy(), expected, atol=1e-9)


@pytest.mark.parametrize("ndim", [2, 3])
def test_nearest_labels_match_simpleitk(ndim: int) -> None:
    spacing, target, shape = SPACING[-ndim:], TARGET[-ndim:], SHAPE[-ndim:]
    label = torch.from_numpy(np.random.default_rng(1).integers(0, 9, (1, *shape)).astype(np.uint8))
    out = resample(label, spacing, target, is_label=True, mode="nearest")
    assert out.dtype == torch.uint8
    new_shape = target_shape(shape, spacing, target)
    geometry = geometry_of(spacing)
    expected = sitk_resample(label[0].numpy(), geometry, geometry.resized(shape, new_shape), new_shape,
                             sitk.sitkNearestNeighbor)
    assert np.array_equal(out[0].numpy(), expected)


@pytest.mark.parametrize("blobs", [True, False])
def test_onehot_labels_match_per_class_simpleitk_argmax(blobs: bool) -> None:
    classes = (0, 2, 7, 9, 12)  # not consecutive; salt and pepper makes many voxels where no class reaches 0.5
    rng = np.random.default_rng(2)
    label = torch.from_numpy(blob_labels(SHAPE, classes) if blobs else rng.choice(classes, SHAPE))[None]
    out = resample(label, SPACING, TARGET, is_label=True)
    assert out.dtype == torch.int64
    new_shape = target_shape(SHAPE, SPACING, TARGET)
    geometry = geometry_of(SPACING)
    new_geometry = geometry.resized(SHAPE, new_shape)
    scores = np.stack([
        sitk_resample((label[0].numpy() == c).astype(np.float64), geometry, new_geometry, new_shape, sitk.sitkLinear)
        for c in classes
    ])
    expected = np.asarray(classes)[scores.argmax(0)]
    top_two = np.sort(scores, axis=0)[-2:]
    decided = top_two[1] - top_two[0] > 1e-9
    assert decided.mean() > 0.9
    assert np.array_equal(out[0].numpy()[decided], expected[decided])
    assert set(out.unique().tolist()) <= set(classes)


def test_onehot_keeps_thin_structures_and_label_dtype() -> None:
    label = torch.zeros(1, 12, 12, dtype=torch.uint8)
    label[0, 5, 2:10] = 3  # a one-voxel-thick line
    up = resample(label, (1.0, 1.0), (0.45, 0.45), is_label=True)
    assert up.dtype == torch.uint8 and set(up.unique().tolist()) == {0, 3}
    # Downsampling by 2 along the line keeps it in every column it covered.
    down = resample(label, (1.0, 1.0), (1.0, 2.0), is_label=True)
    assert (down[0] == 3).any(dim=0).sum() == 4


def test_load_image_with_target_spacing_matches_simpleitk(tmp_path: Path) -> None:
    image = torch.randn(1, *SHAPE)
    geometry = geometry_of(SPACING)
    save_image(image, tmp_path / "case.mha", geometry)
    out, new_geometry = load_image(tmp_path / "case.mha", target_spacing=TARGET, interpolation="linear")
    new_shape = tuple(out.shape[1:])
    assert new_shape == target_shape(SHAPE, SPACING, TARGET)
    np.testing.assert_allclose(new_geometry.spacing, TARGET, rtol=0.1)
    expected = sitk_resample(image[0].numpy(), geometry, new_geometry, new_shape, sitk.sitkLinear)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
    label = torch.from_numpy(blob_labels(SHAPE, (0, 1, 2)))[None]
    save_image(label, tmp_path / "label.nii.gz", geometry)
    loaded, label_geometry = load_image(tmp_path / "label.nii.gz", is_label=True, target_spacing=TARGET)
    _, stored = load_image(tmp_path / "label.nii.gz")
    assert torch.equal(loaded, resample(label, stored.spacing, TARGET, is_label=True, mode="onehot"))
    assert label_geometry == stored.resized(SHAPE, new_shape)


def test_resized_geometry_keeps_the_physical_centre() -> None:
    geometry = geometry_of(SPACING)
    new_shape = (9, 4, 11)
    resized = geometry.resized(SHAPE, new_shape)

    def centre(g: Geometry, shape: tuple[int, ...]) -> np.ndarray:
        half = np.array([(n - 1) / 2 * s for n, s in zip(shape, g.spacing, strict=True)])[::-1]  # to (x, y, z)
        return np.array(g.origin) + np.array(g.direction).reshape(3, 3) @ half

    np.testing.assert_allclose(centre(resized, new_shape), centre(geometry, SHAPE), atol=1e-12)
    np.testing.assert_allclose(np.array(resized.spacing) * new_shape, np.array(SPACING) * SHAPE)
    assert geometry.resized(SHAPE, SHAPE) == geometry


# ---- cubic and separate z against the numpy reference -----------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_cubic_is_separable_keys_convolution(ndim: int) -> None:
    spacing, target, shape = SPACING[-ndim:], TARGET[-ndim:], SHAPE[-ndim:]
    image = torch.randn(1, *shape, dtype=torch.float64)
    out = resample(image, spacing, target)  # images default to cubic
    new_shape = target_shape(shape, spacing, target)
    expected = separable_reference(image[0].numpy(), new_shape, ["cubic"] * ndim)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-10)


def test_separate_z_for_anisotropic_images_and_labels() -> None:
    spacing, target, shape = (3.5, 0.8, 0.8), (1.4, 0.6, 0.7), (4, 5, 6)
    new_shape = target_shape(shape, spacing, target)
    image = torch.randn(1, *shape, dtype=torch.float64)
    out = resample(image, spacing, target)  # 3.5 / 0.8 > 3: separate z decided automatically
    expected = separable_reference(image[0].numpy(), new_shape, ["nearest", "cubic", "cubic"])
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-10)
    assert not torch.allclose(out, resample(image, spacing, target, separate_z=False))

    classes = (0, 1, 4)
    label = torch.from_numpy(blob_labels(shape, classes, seed=3))[None]
    out_label = resample(label, spacing, target, is_label=True)
    scores = np.stack([
        separable_reference((label[0].numpy() == c).astype(float), new_shape, ["nearest", "linear", "linear"])
        for c in classes
    ])
    top_two = np.sort(scores, axis=0)[-2:]
    decided = top_two[1] - top_two[0] > 1e-9
    assert np.array_equal(out_label[0].numpy()[decided], np.asarray(classes)[scores.argmax(0)][decided])


@pytest.mark.parametrize(
    ("spacing", "target", "separate"),
    [
        ((3.0, 1.0, 1.0), (2.0, 0.8, 0.8), False),  # ratio exactly 3 is not anisotropic
        ((4.0, 4.0, 1.0), (2.0, 2.0, 0.8), False),  # two coarsest axes: nnU-Net resamples jointly
        ((4.0, 3.0, 1.0), (2.0, 2.0, 0.8), True),  # one coarsest axis, even with a close second
        ((1.0, 1.0, 1.0), (1.0, 1.0, 3.5), True),  # anisotropic target spacing decides too
        ((1.0, 3.3, 1.0), (1.2, 1.2, 1.2), True),  # coarse axis in the middle
    ],
)
def test_separate_z_decision_follows_nnunet(spacing: tuple, target: tuple, separate: bool) -> None:
    image = torch.randn(1, 6, 7, 5, dtype=torch.float64)
    new_shape = target_shape(image.shape[1:], spacing, target)
    out = resample(image, spacing, target)
    ratios = [max(s) / min(s) for s in (spacing, target)]
    coarse = spacing if ratios[0] > 3 else target
    kinds = ["cubic"] * 3
    if separate:
        kinds[int(np.argmax(coarse))] = "nearest"
    expected = separable_reference(image[0].numpy(), new_shape, kinds)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-10)


def test_separate_z_true_needs_one_coarse_axis() -> None:
    with pytest.raises(ValueError, match="one coarsest axis"):
        resample(torch.zeros(1, 4, 4, 4), (2.0, 2.0, 1.0), (1.0, 1.0, 1.0), separate_z=True)
    with pytest.raises(ValueError, match="only applies to 3D"):
        resample(torch.zeros(1, 4, 4), (2.0, 1.0), (1.0, 1.0), separate_z=True)


# ---- dtypes and layouts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int16])
def test_image_dtypes(dtype: torch.dtype) -> None:
    image = (torch.rand(1, 4, 6, 5) * 100).to(dtype)
    out = resample(image, (1.0, 1.0, 1.0), (0.7, 1.3, 1.0), mode="linear")
    assert out.dtype == (dtype if dtype.is_floating_point else torch.float32)
    reference = resample(image.double(), (1.0, 1.0, 1.0), (0.7, 1.3, 1.0), mode="linear")
    torch.testing.assert_close(out.double(), reference, rtol=1e-2, atol=0.5)


def test_batched_input_equals_per_sample() -> None:
    batch = torch.randn(3, 2, 4, 5, 6)
    out = resample_to_shape(batch, (7, 3, 8))
    assert out.shape == (3, 2, 7, 3, 8)
    for i in range(3):
        torch.testing.assert_close(out[i], resample_to_shape(batch[i], (7, 3, 8)))
    labels = torch.randint(0, 3, (2, 1, 5, 5))
    assert torch.equal(resample_to_shape(labels, (8, 3), is_label=True)[1],
                       resample_to_shape(labels[1], (8, 3), is_label=True))


@pytest.mark.parametrize("ids", [(-1, 0, 3), (0, 5, 70000)])
def test_onehot_handles_negative_and_sparse_ids(ids: tuple[int, ...]) -> None:
    label = torch.tensor(ids).view(1, 3, 1).expand(1, 3, 8)  # one class per row
    out = resample(label, (1.0, 1.0), (0.5, 0.5), is_label=True)
    assert torch.equal(out, label.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))
