"""Inspection: per-case records, pooled foreground statistics, bounded memory, JSON, planning, CLI, nnU-Net."""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.export import write_case, write_dataset_json
from mipcandy.data.geometry import Geometry
from mipcandy.data.inspection import inspect, inspect_case, load_inspection_annotations
from mipcandy.data.nnunet import NNUNetDataset
from mipcandy.data.planning import plan_patch_shape

ROOT = Path(__file__).resolve().parents[1]


def _blob_case(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int = 3) -> tuple:
    """Random image (zero outside a box) and a label of random boxes, with foreground sizes varying per case."""
    image = np.zeros((2, *shape), dtype=np.float32)
    inner = (slice(None), *(slice(int(rng.integers(0, 3)), n - int(rng.integers(0, 3))) for n in shape))
    means = np.array([30.0, -5.0]).reshape(2, *([1] * len(shape)))
    image[inner] = rng.normal(means, 10.0, size=(2, *shape))[inner]
    label = np.zeros((1, *shape), dtype=np.int64)
    for c in range(1, num_classes):  # boxes inside [2, n - 2), so within the nonzero region
        lo = [int(rng.integers(2, n // 2)) for n in shape]
        hi = [min(low + int(rng.integers(2, n // 3)), n - 2) for low, n in zip(lo, shape, strict=True)]
        label[(0, *(slice(a, b) for a, b in zip(lo, hi, strict=True)))] = c
    return torch.from_numpy(image), torch.from_numpy(label)


def _dataset(seed: int = 0, num_cases: int = 4, shape: tuple[int, ...] = (12, 16, 14)):
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(num_cases):
        image, label = _blob_case(rng, shape)
        spacing = (float(rng.choice([2.0, 2.5])), 0.8, 0.8)[-len(shape):]
        cases[f"case_{i}"] = (image, label, Geometry.identity(len(shape), spacing))
    return dataset_from_tensors(cases), cases


def test_records_match_numpy() -> None:
    dataset, cases = _dataset()
    annotations = inspect(dataset, progress=False, max_samples_per_class=25)
    assert annotations.case_ids == sorted(cases) and annotations.dataset is dataset
    for record in annotations.cases:
        image, label, geometry = (t.numpy() if isinstance(t, torch.Tensor) else t for t in cases[record.case_id])
        assert record.shape == image.shape[1:] and record.spacing == geometry.spacing
        nonzero = np.argwhere((image != 0).any(axis=0))
        assert record.crop_bbox == tuple((int(a), int(b) + 1) for a, b in zip(nonzero.min(0), nonzero.max(0),
                                                                             strict=True))
        counts = np.bincount(label.ravel())
        assert record.class_counts == {c: int(n) for c, n in enumerate(counts) if n}
        for c in range(1, len(counts)):
            where = np.argwhere(label[0] == c)
            assert record.class_bboxes[c] == tuple((int(a), int(b) + 1) for a, b in zip(where.min(0), where.max(0),
                                                                                         strict=True))
            locations = record.locations[c]
            assert len(locations) == min(25, len(where)) and len(np.unique(locations, axis=0)) == len(locations)
            assert (label[0][tuple(locations.T)] == c).all()  # every stored location lies in its class
        assert 0 not in record.locations  # never background
        fg = np.argwhere(label[0] > 0)
        assert record.foreground_bbox == tuple((int(a), int(b) + 1) for a, b in zip(fg.min(0), fg.max(0), strict=True))


def _exact_percentile(per_case: list[np.ndarray], q: str) -> float:
    """Inverted-CDF percentile with case-equal weights in exact rational arithmetic (ties are exact ties)."""
    target = Fraction(q) / 100 * len(per_case)
    cumulative = Fraction(0)
    for value, weight in sorted((v, Fraction(1, len(values))) for values in per_case for v in values.tolist()):
        cumulative += weight
        if cumulative >= target:
            return value
    raise AssertionError("unreachable")


def test_intensity_statistics_match_numpy_on_all_foreground_voxels() -> None:
    dataset, cases = _dataset(seed=1, num_cases=5)
    annotations = inspect(dataset, progress=False)
    for channel, stats in enumerate(annotations.intensity):
        # nnU-Net weighs every case equally (the same number of draws per case): value weight 1 / n_case.
        per_case = [img[channel][lab[0] > 0].double().numpy() for img, lab, _ in cases.values()]
        values = np.concatenate(per_case)
        weights = np.concatenate([np.full(len(v), 1.0 / len(v)) for v in per_case])
        mean = np.mean([v.mean() for v in per_case])
        assert stats.mean == pytest.approx(mean, rel=1e-9)
        assert stats.std == pytest.approx(np.sqrt(np.average((values - mean) ** 2, weights=weights)), rel=1e-9)
        assert (stats.min, stats.max) == (values.min(), values.max())
        expected = [_exact_percentile(per_case, q) for q in ("0.5", "50", "99.5")]
        assert [stats.percentile_00_5, stats.median, stats.percentile_99_5] == expected
    # With equal foreground sizes the weighting is uniform: plain numpy statistics.
    image = torch.randn(1, 6, 6, 6) * 3 + 1
    label = torch.zeros(1, 6, 6, 6, dtype=torch.int64)
    label[0, 1:4, 1:4, 1:4] = 1
    same = dataset_from_tensors({c: (image * (i + 1), label, Geometry.identity(3)) for i, c in enumerate("ab")})
    stats = inspect(same, progress=False).intensity[0]
    values = np.concatenate([(image * k)[label > 0].double().numpy() for k in (1, 2)])
    assert stats.mean == pytest.approx(values.mean()) and stats.std == pytest.approx(values.std())
    assert stats.median == pytest.approx(np.percentile(values, 50, method="inverted_cdf"))


def test_statistics_are_sampled_with_bounded_memory() -> None:
    rng = np.random.default_rng(2)
    for shape in ((16, 16, 16), (40, 48, 48)):
        image = torch.from_numpy(rng.normal(size=(1, *shape)).astype(np.float32))
        label = torch.from_numpy(rng.integers(0, 3, size=(1, *shape)))
        record, samples = inspect_case("big", image, label, (1.0, 1.0, 1.0), max_samples_per_class=100,
                                       intensity_budget=500)
        assert samples.shape == (1, 500)  # bounded whatever the volume
        assert all(len(v) == 100 for v in record.locations.values()) and set(record.locations) == {1, 2}
        assert record.class_counts[1] > 1000
        flat = label.reshape(-1)
        assert np.isin(samples[0], image.reshape(-1)[flat > 0].numpy()).all()  # sampled from foreground only


def test_sampling_is_seeded_per_case_not_per_position() -> None:
    dataset, cases = _dataset(seed=3)
    a = inspect(dataset, progress=False, max_samples_per_class=5, intensity_samples=40)
    b = inspect(dataset, progress=False, max_samples_per_class=5, intensity_samples=40)
    assert a == b
    subset = inspect(dataset.subset(["case_2", "case_3"]), progress=False, max_samples_per_class=5,
                     intensity_samples=20)
    assert subset.cases == a.cases[2:]  # same per-case budget (10), same records
    other = inspect(dataset, progress=False, max_samples_per_class=5, intensity_samples=40, seed=1)
    assert any(not np.array_equal(x.locations[1], y.locations[1]) for x, y in zip(a.cases, other.cases,
                                                                                  strict=True))


def test_json_round_trip(tmp_path: Path) -> None:
    dataset, _ = _dataset(seed=4)
    annotations = inspect(dataset, progress=False, max_samples_per_class=30)
    path = tmp_path / "inspection.json"
    annotations.save(path)
    loaded = load_inspection_annotations(path, dataset)
    assert loaded == annotations and loaded.dataset is dataset
    assert loaded.target_spacing() == annotations.target_spacing()
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["derived"]["patch_shape"] == list(annotations.patch_shape())
    assert set(data["foreground_intensity_properties_per_channel"]["0"]) == {
        "mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5"}  # nnU-Net's keys
    assert [p.name for p in tmp_path.iterdir()] == ["inspection.json"]  # atomic: no temporary left
    path.write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_inspection_annotations(path)
    with pytest.raises(ValueError, match="belong to another dataset"):
        annotations.with_dataset(dataset.subset(["case_0"]))


def test_bad_cases_are_named() -> None:
    image = torch.ones(1, 4, 4, 4)
    with pytest.raises(ValueError, match="case 'x'.*same 2D or 3D grid"):
        inspect_case("x", image, torch.zeros(1, 4, 4, 5, dtype=torch.int64), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="case 'y'.*negative"):
        inspect_case("y", image, -torch.ones(1, 4, 4, 4, dtype=torch.int64), (1.0, 1.0, 1.0))


@pytest.mark.parametrize(("median", "spacing", "max_voxels"), [
    ((300.0, 300.0, 300.0), (1.0, 1.0, 1.0), None),
    ((30.0, 400.0, 400.0), (5.0, 0.8, 0.8), None),
    ((40.0, 50.0, 36.0), (1.0, 1.0, 1.0), None),
    ((512.0, 512.0), (0.7, 0.7), None),
    ((200.0, 180.0, 160.0), (1.0, 1.0, 1.0), 64**3),
])
def test_patch_shape_rule(median: tuple, spacing: tuple, max_voxels: int | None) -> None:
    patch = plan_patch_shape(median, spacing, max_voxels=max_voxels, divisor=16)
    budget = max_voxels or (96**3 if len(median) == 3 else 256**2)
    assert all(p % 16 == 0 and p >= 16 for p in patch)
    assert np.prod(patch) <= budget
    assert all(p <= m + 15 for p, m in zip(patch, median, strict=True))  # clipped to the median shape, rounded up
    if spacing[0] > 2 * spacing[1]:  # coarse axis: fewer voxels along it
        assert patch[0] < patch[1]
    if median == (40.0, 50.0, 36.0):
        assert patch == (48, 64, 48)  # small dataset: the whole median image, padded to the divisor


def _write_nnunet(folder: Path) -> Path:
    _, cases = _dataset(seed=5, num_cases=3)
    for case_id, (image, label, geometry) in cases.items():
        write_case(folder, case_id, image, label, geometry)
    write_dataset_json(folder, name="T", channel_names={0: "CT", 1: "T1"}, labels={"background": 0, "a": 1, "b": 2},
                       num_training=len(cases), file_ending=".nii.gz")
    return folder


def test_cli_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mipcandy.cli import inspect_command

    folder = _write_nnunet(tmp_path / "Dataset001_T")
    parser = argparse.ArgumentParser()
    inspect_command.configure(parser)
    assert inspect_command.run(parser.parse_args([str(folder), "--max-samples-per-class", "50"])) == 0
    out = capsys.readouterr().out
    assert "Dataset001_T: 3 cases, 3D" in out and "target spacing" in out and "planned patch shape" in out
    assert "percentile_99_5" in out and "0: CT" in out and "class 2 (b)" in out
    expected = inspect(NNUNetDataset(folder), max_samples_per_class=50, progress=False)
    assert load_inspection_annotations(folder / "inspection.json") == expected
    custom = tmp_path / "elsewhere" / "a.json"
    assert inspect_command.run(parser.parse_args([str(folder), "--json", str(custom), "--seed", "1"])) == 0
    assert load_inspection_annotations(custom).settings["seed"] == 1
    assert inspect_command.run(parser.parse_args([str(tmp_path / "missing")])) == 2
    assert "dataset.json does not exist" in capsys.readouterr().err
    # The command module itself must not pull torch in (candy --help stays fast).
    code = "import sys, mipcandy.cli.inspect_command; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True,
                            env={"PYTHONPATH": str(ROOT / "core")})
    assert result.stdout.strip() == "False"


def test_agrees_with_nnunet_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's comparison, small: nnU-Net samples (200k draws), we are exact; see its tolerances."""
    pytest.importorskip("nnunetv2")
    spec = importlib.util.spec_from_file_location("fingerprint_agreement", ROOT / "benchmarks" /
                                                  "fingerprint_agreement.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    # nnunetv2 is installed (the bench extra): its extractor must load and agree, or the test fails
    checks = bench.run(num_cases=3, total_samples=200_000, seed=0, workdir=tmp_path, num_processes=1)
    failed = [(c.name, c.ours, c.theirs, c.tolerance) for c in checks if not c.ok]
    assert not failed
    assert len(checks) == 3 * 2 + 2 * 7
