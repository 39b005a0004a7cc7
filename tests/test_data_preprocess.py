"""Preprocessing: crop to nonzero, normalization schemes, target spacing, the safetensors cache and its freshness."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mipcandy.data.cropping import crop, nonzero_bbox, uncrop
from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.export import write_case, write_dataset_json
from mipcandy.data.geometry import Geometry
from mipcandy.data.intensity_stats import IntensityStats
from mipcandy.data.nnunet import NNUNetDataset
from mipcandy.data.normalization import normalization_scheme, normalization_schemes, normalize
from mipcandy.data.planning import plan_target_spacing
from mipcandy.data.preprocess import CASES, MANIFEST, PreprocessedDataset, build_cache, preprocess_dataset
from mipcandy.data.preprocessing_plan import PreprocessingPlan, cropped_geometry, preprocess_case, restore_case
from mipcandy.data.synthetic import synthetic_case

STATS = IntensityStats(mean=40.0, median=38.0, std=12.5, min=-5.0, max=120.0, percentile_00_5=2.0,
                       percentile_99_5=90.0)


def _case(index: int, shape: tuple[int, ...], spacing: tuple[float, ...], margin: int = 2) -> tuple:
    """A synthetic case whose image is zero outside a box (so cropping to nonzero has work to do)."""
    image, label = synthetic_case(index, shape=shape, spacing=spacing, num_classes=3, num_channels=2, seed=7)
    keep = torch.zeros(shape, dtype=torch.bool)
    keep[tuple(slice(margin + index % 2, n - margin) for n in shape)] = True
    image[:, ~keep] = 0
    label[:, ~keep] = 0
    return image, label


def _write_dataset(folder: Path, cases: dict[str, tuple], channel_names: dict[int, str]) -> Path:
    for case_id, (image, label, spacing) in cases.items():
        write_case(folder, case_id, image, label, Geometry.identity(image.ndim - 1, spacing))
    write_dataset_json(folder, name="T", channel_names=channel_names, labels={"background": 0, "a": 1, "b": 2},
                       num_training=len(cases), file_ending=".nii.gz")
    return folder


@pytest.fixture(scope="module")
def raw_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spacings = [(3.0, 0.8, 0.8), (3.0, 0.9, 0.9), (2.5, 0.8, 0.8)]
    cases = {f"case_{i}": (*_case(i, (10, 20, 18), spacing), spacing) for i, spacing in enumerate(spacings)}
    return _write_dataset(tmp_path_factory.mktemp("raw") / "ds", cases, {0: "CT", 1: "T2"})


# --- cropping --------------------------------------------------------------------------------------------------------


def test_nonzero_bbox_matches_numpy_and_uncrop_inverts_crop() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((2, 9, 11, 7), dtype=np.float32)
    image[0, 2:5, 3:9, 1:2] = rng.normal(size=(3, 6, 1))
    image[1, 4:7, 5:6, 2:6] = rng.normal(size=(3, 1, 4))
    hits = np.argwhere((image != 0).any(axis=0))
    expected = tuple((int(lo), int(hi) + 1) for lo, hi in zip(hits.min(0), hits.max(0), strict=True))
    tensor = torch.from_numpy(image)
    assert nonzero_bbox(tensor) == expected == ((2, 7), (3, 9), (1, 6))
    assert torch.equal(uncrop(crop(tensor, expected), expected, image.shape[1:]), tensor)
    assert nonzero_bbox(torch.zeros(1, 4, 5)) == ((0, 4), (0, 5))  # nothing to crop to: keep everything


def test_cropped_geometry_keeps_voxels_in_place() -> None:
    import SimpleITK as sitk

    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    geometry = Geometry((2.0, 0.5, 0.7), (10.0, -4.0, 3.0), direction)
    bbox = ((3, 8), (2, 6), (4, 9))
    full, part = sitk.Image(12, 10, 9, sitk.sitkFloat32), sitk.Image(5, 4, 5, sitk.sitkFloat32)
    geometry.apply_to(full)
    cropped_geometry(geometry, bbox).apply_to(part)
    # Voxel (z, y, x) = (3, 2, 4) of the full grid is voxel (0, 0, 0) of the crop; SimpleITK indices are (x, y, z).
    assert np.allclose(full.TransformIndexToPhysicalPoint((4, 2, 3)), part.TransformIndexToPhysicalPoint((0, 0, 0)))


# --- normalization ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "scheme"), [("CT", "ct"), ("ct", "ct"), ("noNorm", "nonorm"), ("none", "nonorm"),
                                              ("rescale_to_0_1", "rescale_to_0_1"), ("T2", "zscore"),
                                              ("MRI", "zscore"), ("zscore", "zscore"), ("RGB_to_0_1", "rgb_to_0_1")])
def test_channel_name_selects_scheme(name: str, scheme: str) -> None:
    assert normalization_scheme(name) == scheme


def test_normalization_schemes_match_numpy() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(50, 30, size=(5, 6, 7, 8)).astype(np.float32)
    x[4] = rng.integers(0, 256, size=(6, 7, 8))
    schemes = normalization_schemes({0: "CT", 1: "T1", 2: "noNorm", 3: "rescale_to_0_1", 4: "rgb_to_0_1"})
    out = normalize(torch.from_numpy(x), schemes, [STATS, None, None, None, None]).numpy()
    x64 = x.astype(np.float64)
    expected = [
        (np.clip(x64[0], STATS.percentile_00_5, STATS.percentile_99_5) - STATS.mean) / STATS.std,
        (x64[1] - x64[1].mean()) / x64[1].std(),
        x64[2],
        (x64[3] - x64[3].min()) / (x64[3].max() - x64[3].min()),
        x64[4] / 255.0,
    ]
    for channel, reference in enumerate(expected):
        np.testing.assert_allclose(out[channel], reference, rtol=1e-5, atol=1e-5, err_msg=schemes[channel])
    assert out.dtype == np.float32


def test_normalization_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="CT normalization needs"):
        normalize(torch.ones(1, 3, 3), ["ct"])
    with pytest.raises(ValueError, match=r"rgb_to_0_1 expects values in \[0, 255\]"):
        normalize(torch.full((1, 3, 3), 300.0), ["rgb_to_0_1"])
    with pytest.raises(ValueError, match="3 channels"):
        normalize(torch.ones(3, 2, 2), ["zscore"])
    constant = normalize(torch.full((1, 4, 4), 7.0), ["zscore"])  # std 0: guarded, no NaN
    assert torch.isfinite(constant).all()


# --- target spacing --------------------------------------------------------------------------------------------------


def _nnunet_target_spacing(spacings: list, shapes: list) -> np.ndarray | None:
    """nnU-Net's own rule, when nnunetv2 can be imported (an independent reference)."""
    try:
        from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    except Exception:  # not installed, or its torchvision is broken
        return None
    planner = SimpleNamespace(overwrite_target_spacing=None, anisotropy_threshold=3,
                              dataset_fingerprint={"spacings": spacings, "shapes_after_crop": shapes})
    return ExperimentPlanner.determine_fullres_target_spacing(planner)


@pytest.mark.parametrize("kind", ["isotropic", "anisotropic", "aniso_spacing_only", "clamped"])
def test_target_spacing_rule(kind: str) -> None:
    rng = np.random.default_rng(3)
    n = 9
    if kind == "isotropic":
        spacings = rng.uniform(0.7, 1.3, size=(n, 3))
        shapes = rng.integers(100, 200, size=(n, 3))
    else:
        coarse = {"anisotropic": rng.uniform(3.0, 8.0, n), "aniso_spacing_only": rng.uniform(3.0, 8.0, n),
                  "clamped": np.r_[rng.uniform(0.3, 0.4, 2), rng.uniform(3.5, 4.0, 7)]}[kind]
        spacings = np.c_[coarse, rng.uniform(0.6, 0.9, size=(n, 2))]
        depth = rng.integers(20, 40, n) if kind != "aniso_spacing_only" else rng.integers(150, 200, n)
        shapes = np.c_[depth, rng.integers(250, 300, size=(n, 2))]
    ours = np.array(plan_target_spacing(spacings.tolist(), shapes.tolist()))
    median = np.median(spacings, axis=0)
    expected = median.copy()
    if kind == "anisotropic":  # worst axis > 3x the others AND < 1/3 of their voxels: 10th percentile
        expected[0] = np.percentile(spacings[:, 0], 10)
        assert expected[0] < median[0]
    elif kind == "clamped":  # the 10th percentile would be finer than the in-plane spacing: clamp above it
        expected[0] = median[1:].max() + 1e-5
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    reference = _nnunet_target_spacing(spacings.tolist(), shapes.tolist())
    if reference is not None:
        np.testing.assert_allclose(ours, reference, rtol=1e-12)


# --- one case --------------------------------------------------------------------------------------------------------


def test_preprocess_case_crops_normalizes_resamples_and_restores() -> None:
    image, label = _case(0, (10, 20, 18), (3.0, 0.8, 0.8))
    geometry = Geometry((3.0, 0.8, 0.8), (1.0, 2.0, 3.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    plan = PreprocessingPlan(("ct", "zscore"), (STATS, None), (1.5, 1.6, 1.6))
    out, out_label, props = preprocess_case(image, label, geometry, plan, case_id="c")
    bbox = ((2, 8), (2, 18), (2, 16))
    assert props.bbox == bbox and props.shape_after_crop == (6, 16, 14) and props.shape == (10, 20, 18)
    assert out.shape == (2, 12, 8, 7) and out_label.shape == (1, 12, 8, 7)  # round(shape * spacing / target)
    assert set(out_label.unique().tolist()) <= {0, 1, 2}
    assert props.preprocessed_geometry().spacing == pytest.approx((1.5, 1.6, 1.6))
    # Without resampling the normalization is exactly the per-channel rule on the cropped voxels.
    plain = PreprocessingPlan(("ct", "zscore"), (STATS, None), None)
    flat, flat_label, flat_props = preprocess_case(image, label, geometry, plain, case_id="c")
    cropped = crop(image, bbox).double().numpy()
    np.testing.assert_allclose(flat[1].numpy(), (cropped[1] - cropped[1].mean()) / cropped[1].std(), atol=1e-5)
    np.testing.assert_allclose(flat[0].numpy(), (np.clip(cropped[0], 2, 90) - 40) / 12.5, atol=1e-5)
    assert torch.equal(flat_label, crop(label, bbox))
    # Restoring a (perfect) prediction puts it back on the original grid: exactly without resampling.
    assert torch.equal(restore_case(flat_label, flat_props, is_label=True), label)
    restored = restore_case(out_label, props, is_label=True)
    assert restored.shape == label.shape and (restored == label).float().mean() > 0.97
    probabilities = restore_case(torch.rand(3, 12, 8, 7), props)
    assert probabilities.shape == (3, 10, 20, 18) and probabilities.dtype == torch.float32


def test_plan_key_changes_with_every_setting() -> None:
    base = PreprocessingPlan(("ct", "zscore"), (STATS, None), (1.0, 1.0, 1.0))
    variants = [
        PreprocessingPlan(("ct", "nonorm"), (STATS, None), (1.0, 1.0, 1.0)),
        PreprocessingPlan(("ct", "zscore"), (IntensityStats(**{**STATS.to_dict(), "std": 12.6}), None),
                          (1.0, 1.0, 1.0)),
        PreprocessingPlan(("ct", "zscore"), (STATS, None), (1.0, 1.0, 1.1)),
        PreprocessingPlan(("ct", "zscore"), (STATS, None), None),
        PreprocessingPlan(("ct", "zscore"), (STATS, None), (1.0, 1.0, 1.0), crop=False),
        PreprocessingPlan(("ct", "zscore"), (STATS, None), (1.0, 1.0, 1.0), image_mode="linear"),
        PreprocessingPlan(("ct", "zscore"), (STATS, None), (1.0, 1.0, 1.0), label_mode="nearest"),
    ]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == len(variants) + 1
    # Statistics of per-case channels do not matter, so they do not enter the key.
    assert PreprocessingPlan(("ct", "zscore"), (STATS, STATS), (1.0, 1.0, 1.0)).key() == base.key()
    assert PreprocessingPlan.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    with pytest.raises(ValueError, match="CT normalization but have no"):
        PreprocessingPlan(("ct",), (None,), None)


# --- the cache -------------------------------------------------------------------------------------------------------


def test_cache_builds_reuses_and_serves_the_supervised_api(raw_dataset: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from mipcandy.data import preprocess

    dataset = NNUNetDataset(raw_dataset)
    first = build_cache(dataset, tmp_path / "cache", progress=False)
    assert first.rebuilt == tuple(dataset.case_ids) and first.reused == ()
    assert first.plan.normalization == ("ct", "zscore") and first.plan.intensity[0] is not None
    assert first.plan.target_spacing == pytest.approx((3.0, 0.8, 0.8))
    monkeypatch.setattr(preprocess, "inspect", None)  # unchanged sources: the stored fingerprint is reused
    again = build_cache(dataset, tmp_path / "cache", progress=False)
    assert again.rebuilt == () and again.reused == tuple(dataset.case_ids) and again.plan == first.plan
    assert not [p for p in (tmp_path / "cache").rglob(".*")]  # no temporary files left behind

    cached = PreprocessedDataset(tmp_path / "cache")
    assert cached.case_ids == dataset.case_ids and len(cached) == 3
    for i in range(len(dataset)):
        image, label = cached[i]
        expected_image, expected_label, props = preprocess_case(*dataset[i], dataset.geometry(i), first.plan,
                                                                case_id=dataset.case_id(i))
        assert torch.equal(image, expected_image) and torch.equal(label, expected_label) and label.dtype == torch.int64
        assert cached.properties(i) == props
        assert cached.geometry(i) == props.preprocessed_geometry()
        assert cached.spatial_shape(i) == tuple(image.shape[1:])
    box = ((1, 4), (2, 9), (0, 5))
    part_image, part_label = cached.read_region(1, box)
    assert torch.equal(part_image, crop(cached[1][0], box)) and torch.equal(part_label, crop(cached[1][1], box))
    train, val = cached.fold(0, num_folds=3)
    assert sorted(train.case_ids + val.case_ids) == cached.case_ids and len(val) == 1
    assert isinstance(train, PreprocessedDataset) and train[0][0].shape[0] == 2


def test_changed_setting_rebuilds_every_case(raw_dataset: Path, tmp_path: Path) -> None:
    dataset = NNUNetDataset(raw_dataset)
    build_cache(dataset, tmp_path / "cache", progress=False)
    changed = build_cache(dataset, tmp_path / "cache", progress=False, target_spacing=(3.0, 1.0, 1.0))
    assert changed.rebuilt == tuple(dataset.case_ids)
    assert PreprocessedDataset(tmp_path / "cache").plan.target_spacing == (3.0, 1.0, 1.0)
    unchanged_crop = build_cache(dataset, tmp_path / "cache", progress=False, target_spacing=(3.0, 1.0, 1.0),
                                 crop=False)
    assert unchanged_crop.rebuilt == tuple(dataset.case_ids)


def test_code_version_is_part_of_the_key(raw_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mipcandy.data import preprocessing_plan

    dataset = NNUNetDataset(raw_dataset)
    build_cache(dataset, tmp_path / "cache", progress=False)
    monkeypatch.setattr(preprocessing_plan, "PREPROCESSING_VERSION", preprocessing_plan.PREPROCESSING_VERSION + 1)
    assert build_cache(dataset, tmp_path / "cache", progress=False).rebuilt == tuple(dataset.case_ids)


def test_touched_or_broken_case_is_rebuilt_alone(raw_dataset: Path, tmp_path: Path) -> None:
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(raw_dataset, raw)
    build_cache(NNUNetDataset(raw), tmp_path / "cache", progress=False)
    label_file = raw / "labelsTr" / "case_1.nii.gz"
    stat = label_file.stat()
    os.utime(label_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = build_cache(NNUNetDataset(raw), tmp_path / "cache", progress=False)
    assert touched.rebuilt == ("case_1",) and touched.reused == ("case_0", "case_2")
    # A truncated cache file (e.g. a crash outside our atomic writes, disk trouble) is stale too.
    case_file = tmp_path / "cache" / CASES / "case_2.safetensors"
    case_file.write_bytes(case_file.read_bytes()[:100])
    assert build_cache(NNUNetDataset(raw), tmp_path / "cache", progress=False).rebuilt == ("case_2",)
    # A case that left the dataset leaves the cache.
    for path in [*raw.glob("imagesTr/case_0_*"), raw / "labelsTr" / "case_0.nii.gz"]:
        path.unlink()
    meta = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    (raw / "dataset.json").write_text(json.dumps({**meta, "numTraining": 2}), encoding="utf-8")
    pruned = build_cache(NNUNetDataset(raw), tmp_path / "cache", progress=False)
    assert pruned.removed == ("case_0.safetensors",)
    assert PreprocessedDataset(tmp_path / "cache").case_ids == ["case_1", "case_2"]


def test_in_memory_dataset_is_identified_by_content(tmp_path: Path) -> None:
    image, label = _case(0, (8, 12, 12), (1.0, 1.0, 1.0))
    geometry = Geometry.identity(3)
    cases = {"a": (image, label, geometry), "b": (image * 2, label, geometry)}
    plan = PreprocessingPlan(("zscore", "nonorm"), (None, None), None)
    assert build_cache(dataset_from_tensors(cases), tmp_path, plan=plan, progress=False).rebuilt == ("a", "b")
    edited = image.clone()
    edited[1, 4, 4, 4] += 1
    cases["b"] = (edited, label, geometry)
    assert build_cache(dataset_from_tensors(cases), tmp_path, plan=plan, progress=False).rebuilt == ("b",)
    assert torch.equal(PreprocessedDataset(tmp_path)[1][0][1], crop(edited, nonzero_bbox(edited))[1])


def test_opening_a_missing_or_foreign_cache_explains(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No preprocessing cache"):
        PreprocessedDataset(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(ValueError, match="rebuild the cache"):
        PreprocessedDataset(tmp_path)


def test_preprocess_dataset_2d(tmp_path: Path) -> None:
    cases = {}
    for i in range(2):
        image, label = synthetic_case(i, shape=(24, 20), spacing=(1.0, 1.0), num_classes=3, num_channels=1)
        cases[f"c{i}"] = (image, label, (0.5 + 0.25 * i, 0.5))
    dataset = NNUNetDataset(_write_dataset(tmp_path / "raw", cases, {0: "MRI"}))
    cached = preprocess_dataset(dataset, tmp_path / "cache", progress=False)
    assert cached.plan.target_spacing == pytest.approx((0.625, 0.5))
    assert cached[0][0].shape == (1, 19, 20) and cached[1][0].shape == (1, 29, 20)  # round(24 * spacing / 0.625)
