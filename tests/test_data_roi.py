"""Random ROI batches: foreground oversampling by batch position, padding, clamping, determinism, cache reads."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.inspection import inspect
from mipcandy.data.preprocess import CacheReader, PreprocessedDataset, build_cache
from mipcandy.data.preprocessing_plan import PreprocessingPlan
from mipcandy.data.roi import EpochSampler, RandomROIDataset, forced_count, patch_start

PLAIN = PreprocessingPlan(("nonorm",), (None,), None, crop=False)


def _tiny_foreground_cases(num_cases: int = 4, shape: tuple[int, ...] = (32, 32, 32)) -> dict:
    """Images of constant value k + 1 (to tell cases apart) with one 3^3 foreground cube each."""
    rng = np.random.default_rng(0)
    cases = {}
    for k in range(num_cases):
        image = torch.full((1, *shape), float(k + 1))
        label = torch.zeros((1, *shape), dtype=torch.int64)
        corner = [int(rng.integers(0, n - 3)) for n in shape]
        label[(0, *(slice(c, c + 3) for c in corner))] = 1 + k % 2
        cases[f"case_{k}"] = (image, label, Geometry.identity(len(shape)))
    return cases


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> PreprocessedDataset:
    folder = tmp_path_factory.mktemp("roi_cache")
    build_cache(dataset_from_tensors(_tiny_foreground_cases()), folder, plan=PLAIN, progress=False)
    return PreprocessedDataset(folder)


def test_forced_count_rounds_half_up() -> None:
    assert [forced_count(bs, 0.33) for bs in (1, 2, 3, 4, 5, 6, 12)] == [0, 1, 1, 1, 2, 2, 4]
    assert forced_count(2, 0.0) == 0 and forced_count(4, 1.0) == 4


@pytest.mark.parametrize(("batch_size", "forced_slots"), [(2, {1}), (5, {3, 4}), (3, {2})])
def test_last_samples_of_every_batch_hold_foreground(cached: PreprocessedDataset, batch_size: int,
                                                     forced_slots: set[int]) -> None:
    roi = RandomROIDataset(cached, batch_size, patch_shape=(8, 8, 8), num_patches_per_case=10, seed=3)
    assert {s for s in range(batch_size) if roi.forced(s)} == forced_slots
    hits = np.array([(labels.flatten(1) > 0).any(dim=1).numpy() for _, labels in (roi[i] for i in range(len(roi)))])
    assert hits[:, sorted(forced_slots)].all()  # forced: always foreground
    random_slots = [s for s in range(batch_size) if s not in forced_slots]
    assert hits[:, random_slots].mean() < 0.25  # random 8^3 patches rarely meet a 3^3 cube in 32^3 (~6%)


def test_positions_survive_any_loader_setting(cached: PreprocessedDataset) -> None:
    roi = RandomROIDataset(cached, 2, patch_shape=(8, 8, 8), num_patches_per_case=3, seed=5)
    direct = [roi[i] for i in range(2 * len(roi))]
    loader = roi.loader(num_workers=2, persistent_workers=True)
    streamed = [batch for _ in range(2) for batch in loader]  # two epochs, workers kept alive
    assert len(streamed) == len(direct)
    for (a, b), (c, d) in zip(direct, streamed, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
        assert (d[1] > 0).any()  # the last sample of every batch is forced, whatever the worker
    assert not torch.equal(direct[0][0], direct[len(roi)][0])  # a new epoch draws new patches
    shuffled = torch.utils.data.DataLoader(roi, batch_size=None, shuffle=True)
    assert all((labels[1] > 0).any() for _, labels in shuffled)
    with pytest.raises(ValueError, match="whole batches"):
        roi.loader(batch_size=2)


def test_deterministic_under_seed(cached: PreprocessedDataset) -> None:
    a = RandomROIDataset(cached, 3, patch_shape=(8, 8, 8), seed=11)
    b = RandomROIDataset(cached, 3, patch_shape=(8, 8, 8), seed=11)
    c = RandomROIDataset(cached, 3, patch_shape=(8, 8, 8), seed=12)
    assert all(torch.equal(x, y) for i in range(3) for x, y in zip(a[i], b[i], strict=True))
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(3))
    with pytest.raises(IndexError):
        a[-1]


def test_every_case_appears_num_patches_per_case_times_per_epoch(cached: PreprocessedDataset) -> None:
    roi = RandomROIDataset(cached, 4, patch_shape=(4, 4, 4), num_patches_per_case=2, seed=0)
    assert len(roi) == 2  # 4 cases x 2 patches / 4
    for epoch in range(3):
        images = torch.cat([roi[epoch * len(roi) + i][0] for i in range(len(roi))])
        case_of_patch = images.flatten(1).amax(dim=1).long().tolist()  # constant image value k + 1
        assert Counter(case_of_patch) == {1: 2, 2: 2, 3: 2, 4: 2}
    odd = RandomROIDataset(cached, 3, patch_shape=(4, 4, 4), num_patches_per_case=1)
    seen = Counter(torch.cat([odd[i][0] for i in range(len(odd))]).flatten(1).amax(dim=1).long().tolist())
    assert len(odd) == 2 and sum(seen.values()) == 6 and set(seen) == {1, 2, 3, 4}  # last batch wraps around


def test_patch_larger_than_image_is_padded() -> None:
    shape = (6, 5, 7)
    image = torch.arange(1, 1 + np.prod(shape), dtype=torch.float32).reshape(1, *shape)
    label = torch.ones((1, *shape), dtype=torch.int64)
    dataset = dataset_from_tensors({"small": (image, label, Geometry.identity(3))})
    roi = RandomROIDataset(dataset, 2, patch_shape=(8, 8, 8), seed=0)
    for i in range(5):
        images, labels = roi[i]
        assert images.shape == (2, 1, 8, 8, 8) and labels.shape == (2, 1, 8, 8, 8)
        for patch, patch_label in zip(images, labels, strict=True):
            inside = torch.nonzero(patch[0])
            lo, hi = inside.min(0).values, inside.max(0).values + 1
            assert (hi - lo).tolist() == list(shape)  # the whole image, once, with zero padding around it
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            assert torch.equal(patch[(0, *box)], image[0]) and int(patch_label.sum()) == int(np.prod(shape))


def test_forced_patch_is_clamped_into_the_image() -> None:
    image = torch.ones(1, 20, 20, 20)
    label = torch.zeros(1, 20, 20, 20, dtype=torch.int64)
    label[0, 0, 0, 19] = 1
    dataset = dataset_from_tensors({"corner": (image, label, Geometry.identity(3))})
    roi = RandomROIDataset(dataset, 1, oversample_rate=1.0, patch_shape=(8, 8, 8))
    images, labels = roi[0]
    assert int(images.sum()) == 8**3  # no padding: the centred patch was moved inside the image
    assert labels[0, 0, 0, 0, 7] == 1  # and it still holds the foreground voxel


def test_patch_start_contains_centre_and_stays_valid() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 30, 3))
        patch = tuple(int(p) for p in rng.integers(1, 20, 3))
        centre = [int(rng.integers(0, n)) for n in shape]
        for start in (patch_start(shape, patch, rng, centre), patch_start(shape, patch, rng)):
            for s, p, n in zip(start, patch, shape, strict=True):
                assert min(0, n - p) <= s <= max(0, n - p)
        forced = patch_start(shape, patch, rng, centre)
        assert all(s <= c < s + p for s, c, p in zip(forced, centre, patch, strict=True))


def test_reads_patches_without_loading_whole_cases(cached: PreprocessedDataset,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a whole case was loaded")

    roi = RandomROIDataset(inspect(cached, progress=False), 2, patch_shape=(8, 8, 8))
    monkeypatch.setattr(CacheReader, "read_image", refuse)
    monkeypatch.setattr(CacheReader, "read_label", refuse)
    images, labels = roi[0]
    assert images.shape == (2, 1, 8, 8, 8) and (labels[1] > 0).any()


def test_default_patch_shape_and_errors(cached: PreprocessedDataset, tmp_path: Path) -> None:
    annotations = inspect(cached, progress=False)
    roi = RandomROIDataset(annotations, 2)
    assert roi.patch_shape == annotations.patch_shape() == (32, 32, 32)
    with pytest.raises(ValueError, match="not attached to a dataset"):
        RandomROIDataset(annotations.with_dataset(None), 2)
    with pytest.raises(ValueError, match="batch_size"):
        RandomROIDataset(annotations, 0)
    with pytest.raises(ValueError, match="no foreground locations"):
        RandomROIDataset(inspect(cached, progress=False, max_samples_per_class=0), 2)
    other = tmp_path / "other"
    cases = {k: (v[0][:, :16], v[1][:, :16], v[2]) for k, v in _tiny_foreground_cases().items()}
    build_cache(dataset_from_tensors(cases), other, plan=PLAIN, progress=False)
    with pytest.raises(ValueError, match="stale"):
        RandomROIDataset(annotations.with_dataset(PreprocessedDataset(other)), 2)


def test_epoch_sampler_continues() -> None:
    sampler = EpochSampler(3)
    assert list(sampler) == [0, 1, 2] and list(sampler) == [3, 4, 5]
    sampler.set_epoch(10)
    assert list(sampler) == [30, 31, 32] and len(sampler) == 3


def test_forced_samples_pick_a_class_first_then_a_voxel() -> None:
    image = torch.ones(1, 32, 32, 32)
    label = torch.zeros(1, 32, 32, 32, dtype=torch.int64)
    label[0, 5, 5, 5] = 1  # one voxel of class 1 ...
    label[0, 20:30, 20:30, 20:30] = 2  # ... against 1000 of class 2: classes are still drawn with equal odds
    dataset = dataset_from_tensors({"two": (image, label, Geometry.identity(3))})
    roi = RandomROIDataset(dataset, 4, oversample_rate=1.0, patch_shape=(4, 4, 4), seed=1)
    labels = torch.cat([roi[i][1] for i in range(50)])
    has_one = (labels.flatten(1) == 1).any(dim=1).float().mean()
    assert (labels.flatten(1) > 0).any(dim=1).all() and 0.35 < has_one < 0.65


def test_two_dimensional_patches() -> None:
    image = torch.rand(2, 40, 30) + 0.5
    label = torch.zeros(1, 40, 30, dtype=torch.int64)
    label[0, 35, 2] = 1
    dataset = dataset_from_tensors({"flat": (image, label, Geometry.identity(2))})
    roi = RandomROIDataset(dataset, 2, patch_shape=(16, 48))
    images, labels = roi[0]
    assert images.shape == (2, 2, 16, 48) and labels.shape == (2, 1, 16, 48)
    assert labels[1].sum() == 1  # the forced sample holds the single foreground voxel
    assert ((images == 0).sum(dim=(2, 3)) == 16 * 18).all()  # width 30 padded to 48 (image values are >= 0.5)


def test_augmentation_runs_per_batch_and_is_reproducible(tmp_path) -> None:
    from mipcandy.data import NNUNetAugmentation, NNUNetDataset, make_synthetic_dataset, preprocess_dataset
    from mipcandy.data.roi import RandomROIDataset

    raw = make_synthetic_dataset(tmp_path / "raw", ndim=3, num_cases=3, shape=(24, 24, 24), progress=False)
    cached = preprocess_dataset(NNUNetDataset(raw), tmp_path / "cache", progress=False)
    everything = NNUNetAugmentation(3, p_rotation=1.0, p_scaling=1.0, p_noise=1.0)
    plain = RandomROIDataset(cached, 2, patch_shape=(16, 16, 16), seed=3)
    augmented = RandomROIDataset(cached, 2, patch_shape=(16, 16, 16), seed=3, augmentation=everything)
    again = RandomROIDataset(cached, 2, patch_shape=(16, 16, 16), seed=3, augmentation=everything)
    (image, label), (aug_image, aug_label) = plain[0], augmented[0]
    assert aug_image.shape == image.shape and aug_label.shape == label.shape
    assert not torch.equal(aug_image, image)
    first, second = augmented[1], again[1]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert set(aug_label.unique().tolist()) <= set(range(3))
