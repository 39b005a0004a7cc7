"""Fixed patches around the inspected foreground, checked against NumPy slicing of the full cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.inspection import inspect, load_inspection_annotations
from mipcandy.data.preprocess import PreprocessedDataset, build_cache
from mipcandy.data.preprocessing_plan import PreprocessingPlan
from mipcandy.data.roi_dataset import ROIDataset

PLAIN = PreprocessingPlan(("nonorm",), (None,), None, crop=False)
PATCH = (8, 8, 8)


def cases() -> dict:
    """Three 3D cases: a box of class 1 plus a ring of class 2, a box in a corner, and no foreground."""
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in (("boxes", (20, 24, 22)), ("corner", (16, 16, 16)), ("empty", (12, 14, 16))):
        image = torch.from_numpy(rng.random((1, *shape), dtype=np.float32)) + 1
        label = torch.zeros((1, *shape), dtype=torch.uint8)
        if name == "boxes":
            label[0, 3:7, 4:9, 10:13] = 1
            label[0, 12:15, 10:20, 5:15] = 2
            label[0, 12:15, 12:18, 7:13] = 0  # a ring: its box centre is not of class 2
        elif name == "corner":
            label[0, 13:16, 0:2, 14:16] = 1
        out[name] = (image, label, Geometry.identity(3))
    return out


def expected_patch(image: torch.Tensor, start: tuple[int, ...], patch: tuple[int, ...]) -> np.ndarray:
    """The patch at ``start`` cut out of the full case with NumPy, zero where it leaves the image."""
    array = image.numpy()
    padded = np.zeros((array.shape[0], *patch), dtype=array.dtype)
    src = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, patch, array.shape[1:], strict=True))
    dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start, strict=True))
    padded[(slice(None), *dst)] = array[(slice(None), *src)]
    return padded


def foreground_box(label: torch.Tensor, ids: tuple[int, ...] = (1, 2)) -> list[tuple[int, int]]:
    coords = np.argwhere(np.isin(label[0].numpy(), ids))
    return [(int(lo), int(hi) + 1) for lo, hi in zip(coords.min(0), coords.max(0), strict=True)]


@pytest.fixture(scope="module")
def memory() -> object:
    return dataset_from_tensors(cases())


def test_one_patch_per_case_holds_the_whole_foreground(memory) -> None:
    roi = ROIDataset(inspect(memory, progress=False), patch_shape=PATCH)
    assert [roi.case_id(i) for i in range(len(roi))] == ["boxes", "corner", "empty"]
    for i, (image, label, _) in enumerate(cases().values()):
        patch = roi.patches[i]
        got_image, got_label = roi[i]
        assert got_image.dtype == torch.float32 and got_label.dtype == torch.uint8
        assert got_image.shape == (1, *PATCH) and got_label.shape == (1, *PATCH)
        assert np.array_equal(got_image.numpy(), expected_patch(image, patch.start, PATCH))
        assert np.array_equal(got_label.numpy(), expected_patch(label, patch.start, PATCH))
        assert all(0 <= s <= n - p for s, p, n in zip(patch.start, PATCH, image.shape[1:], strict=True))
        if i == 1:  # the corner box fits in a patch: the patch, moved inside the image, still holds all of it
            assert all(b - a <= p for (a, b), p in zip(foreground_box(label), PATCH, strict=True))
            assert int(got_label.sum()) == int(label.sum())
        if i == 2:  # no foreground: the image centre
            assert patch.center == (6, 7, 8) and patch.class_id is None


def test_per_class_patches_sit_on_a_voxel_of_their_class(memory) -> None:
    roi = ROIDataset(inspect(memory, progress=False), patch_shape=PATCH, per_class=True)
    assert [roi.case_id(i) for i in range(len(roi))] == ["boxes:class1", "boxes:class2", "corner:class1", "empty"]
    label = cases()["boxes"][1]
    ring_box = foreground_box(label, (2,))
    box_centre = tuple((a + b) // 2 for a, b in ring_box)
    assert label[(0, *box_centre)] == 0  # so centring on the box would miss the class
    for i in range(3):
        patch = roi.patches[i]
        _, got_label = roi[i]
        centre_in_patch = tuple(c - s for c, s in zip(patch.center, patch.start, strict=True))
        assert int(got_label[(0, *centre_in_patch)]) == patch.class_id


def test_image_smaller_than_the_patch_is_padded_around_it() -> None:
    image = torch.arange(1, 1 + 4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    label = torch.zeros_like(image, dtype=torch.long)
    label[0, 1:3, 1:3, 1:3] = 1
    roi = ROIDataset(dataset_from_tensors({"small": (image, label, Geometry.identity(3))}), patch_shape=(8, 8, 8))
    got_image, got_label = roi[0]
    inside = torch.nonzero(got_image[0])
    lo, hi = inside.min(0).values, inside.max(0).values + 1
    assert (hi - lo).tolist() == [4, 5, 6]  # the whole image, once, zero around it
    assert torch.equal(got_image[(0, *(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)))], image[0])
    assert int(got_label.sum()) == 8


def test_cache_reads_regions_and_matches_memory(memory, tmp_path: Path) -> None:
    build_cache(memory, tmp_path / "cache", plan=PLAIN, progress=False)
    cached = PreprocessedDataset(tmp_path / "cache")
    annotations = inspect(cached, progress=False)
    annotations.save(tmp_path / "inspection.json")
    from_cache = ROIDataset(load_inspection_annotations(tmp_path / "inspection.json", cached), patch_shape=PATCH,
                            per_class=True)
    from_memory = ROIDataset(memory, patch_shape=PATCH, per_class=True)
    assert from_cache.patches == from_memory.patches
    for i in range(len(from_cache)):
        for a, b in zip(from_cache[i], from_memory[i], strict=True):
            assert torch.equal(a, b)


def test_default_patch_shape_and_errors(memory) -> None:
    annotations = inspect(memory, progress=False)
    assert ROIDataset(annotations).patch_shape == annotations.patch_shape()
    with pytest.raises(ValueError, match="must have 3 positive edges"):
        ROIDataset(annotations, patch_shape=(8, 8))
    with pytest.raises(ValueError, match="not attached to a dataset"):
        ROIDataset(annotations.with_dataset(None), patch_shape=PATCH)
