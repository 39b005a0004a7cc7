"""The Evaluator on real label files (SimpleITK NIfTI/MHA, anisotropic spacing), tensors and datasets."""
from __future__ import annotations

import csv
import io
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.evaluation import EvaluationError, Evaluator, Metric, PairingError, pair_folders, standard_metrics
from mipcandy.metrics import assd, dice_similarity_coefficient, hd95, iou, nsd

SPACING = (3.0, 0.7, 1.1)  # tensor axis order (z, y, x): strongly anisotropic
SHAPE = (6, 12, 10)


def write_label(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    """Write a label map with SimpleITK; ``spacing`` in array axis order."""
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(reversed(spacing)))
    image.SetOrigin((10.0, -5.0, 2.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def random_pair(seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A reference with blob-like classes and a prediction that is a shifted, corrupted copy of it."""
    rng = np.random.default_rng(seed)
    reference = np.zeros(SHAPE, dtype=np.int64)
    for c in range(1, classes):
        z, y, x = rng.integers(1, 4), rng.integers(2, 8), rng.integers(2, 6)
        reference[z : z + 2, y : y + 4, x : x + 3] = c
    prediction = np.roll(reference, shift=int(rng.integers(1, 3)), axis=int(rng.integers(1, 3)))
    flips = rng.random(SHAPE) < 0.03
    prediction[flips] = rng.integers(0, classes, size=int(flips.sum()))
    return prediction, reference


def make_folders(root: Path, n: int = 3) -> tuple[Path, Path, list[tuple[np.ndarray, np.ndarray]]]:
    pairs = [random_pair(seed) for seed in range(n)]
    for i, (prediction, reference) in enumerate(pairs):
        write_label(root / "pred" / f"case_{i:03d}.mha", prediction)
        write_label(root / "ref" / f"case_{i:03d}.nii.gz", reference)
    return root / "pred", root / "ref", pairs


def all_metrics() -> list[Metric]:
    return standard_metrics(["dice", "iou", "hd95", "assd", "nsd"], nsd_tolerance=1.5)


def test_pairing_is_sorted_ignores_non_images_and_mixes_endings(tmp_path: Path) -> None:
    pred, ref, _ = make_folders(tmp_path)
    (pred / "plans.json").write_text("{}", encoding="utf-8")
    (pred / ".case_009.nii.gz.tmp.nii.gz").write_bytes(b"")
    pairs = pair_folders(pred, ref)
    assert [case for case, _, _ in pairs] == ["case_000", "case_001", "case_002"]
    assert all(p.name.endswith(".mha") and r.name.endswith(".nii.gz") for _, p, r in pairs)


def test_pairing_lists_missing_and_extra_cases_in_one_error(tmp_path: Path) -> None:
    pred, ref, pairs = make_folders(tmp_path, n=4)
    (pred / "case_001.mha").unlink()
    (pred / "case_003.mha").unlink()
    write_label(pred / "case_777.mha", pairs[0][0])
    with pytest.raises(PairingError) as caught:
        Evaluator(dice_similarity_coefficient, progress=False).evaluate_folders(pred, ref)
    message = str(caught.value)
    assert str(pred) in message and str(ref) in message
    assert "2 reference case(s) without a prediction: case_001, case_003" in message
    assert "1 prediction(s) without a reference case: case_777" in message


def test_pairing_rejects_two_files_of_one_case(tmp_path: Path) -> None:
    pred, ref, pairs = make_folders(tmp_path, n=2)
    write_label(pred / "case_000.nii.gz", pairs[0][0])
    with pytest.raises(PairingError, match=r"case_000: case_000\.mha, case_000\.nii\.gz"):
        pair_folders(pred, ref)


def test_shape_mismatch_names_the_case(tmp_path: Path) -> None:
    pred, ref, pairs = make_folders(tmp_path)
    write_label(pred / "case_001.mha", pairs[1][0][:, :, :-1])
    with pytest.raises(EvaluationError, match=r"case 'case_001'.*shape \(6, 12, 9\) != \(6, 12, 10\)"):
        Evaluator(dice_similarity_coefficient, progress=False).evaluate_folders(pred, ref)


def test_geometry_mismatch_names_the_case(tmp_path: Path) -> None:
    pred, ref, pairs = make_folders(tmp_path)
    write_label(pred / "case_002.mha", pairs[2][0], spacing=(3.0, 0.7, 1.0))
    with pytest.raises(EvaluationError, match=r"case 'case_002'.*spacing"):
        Evaluator(dice_similarity_coefficient, progress=False).evaluate_folders(pred, ref)


def test_folder_values_equal_direct_metric_calls_with_the_reference_spacing(tmp_path: Path) -> None:
    pred, ref, pairs = make_folders(tmp_path)
    result = Evaluator(*all_metrics(), progress=False).evaluate_folders(pred, ref)
    assert result.case_ids == ["case_000", "case_001", "case_002"] and list(result.classes) == [1, 2]
    direct = {"dice": dice_similarity_coefficient, "iou": iou, "hd95": partial(hd95, spacing=SPACING),
              "assd": partial(assd, spacing=SPACING), "nsd": partial(nsd, tolerance=1.5, spacing=SPACING)}
    for i, (prediction, reference) in enumerate(pairs):
        p, r = torch.from_numpy(prediction)[None], torch.from_numpy(reference)[None]
        for name, fn in direct.items():
            expected = fn(p, r, num_classes=3, reduction="none", spatial_dims=3).double().numpy()
            np.testing.assert_allclose(result.table(name)[i], expected, rtol=1e-6, err_msg=f"{name} case {i}")
        assert result[i].prediction_file == pred / f"case_{i:03d}.mha"
    # The spacing really came from the files: voxel-unit distances differ.
    p, r = (torch.from_numpy(a)[None] for a in pairs[0])
    voxels = hd95(p, r, num_classes=3, reduction="none", spatial_dims=3).double().numpy()
    assert not np.allclose(result.table("hd95")[0], voxels)


def test_aggregates_match_numpy_with_nan_and_infinity() -> None:
    shape = (1, 5, 6, 7)
    labels, predictions = [], []
    for k in range(5):
        label = torch.zeros(shape, dtype=torch.int64)
        label[0, 1:4, 1 + k % 3 : 4, 2:5] = 1
        prediction = label.clone()
        prediction[0, 2, :, : k + 1] = 1
        if k == 3:
            label[0, 4, 4:, 5:] = 2  # class 2 in the reference only: dice 0, hd95 inf
        if k == 4:
            prediction[label == 1] = 0  # class 1 missed entirely: dice 0
        labels.append(label)
        predictions.append(prediction)
    nan_dice = ("dice_nan", partial(dice_similarity_coefficient, if_empty=math.nan))
    result = Evaluator(dice_similarity_coefficient, nan_dice, hd95, progress=False).evaluate(
        predictions, labels, spacing=(2.0, 1.0, 0.5))
    assert list(result.classes) == [1, 2]
    dice = result.table("dice_similarity_coefficient")
    assert dice[0, 1] == 1.0 and math.isnan(result.table("dice_nan")[0, 1])  # class 2 absent from both sides
    assert math.isinf(result.table("hd95")[3, 1])
    for metric in result.metrics:
        table = result.table(metric)
        with np.errstate(invalid="ignore"):
            means = np.nanmean(table, axis=1)
            stats = result.aggregate(metric, worst_n=3)
            np.testing.assert_allclose(result.case_means(metric), means)
            defined = means[np.isfinite(means)]  # summaries cover the cases where the metric is defined
            np.testing.assert_allclose(stats.mean, defined.mean())
            np.testing.assert_allclose(stats.std, defined.std())
            np.testing.assert_allclose(stats.median, np.median(defined))
            assert stats.count == defined.size and stats.undefined == len(means) - defined.size
            class_means = [table[np.isfinite(table[:, j]), j].mean() for j in range(table.shape[1])]
            np.testing.assert_allclose(list(result.class_means(metric).values()), class_means)
            np.testing.assert_allclose(result.foreground_mean(metric), np.mean(class_means))
        keep = np.flatnonzero(~np.isnan(means))
        key = -means[keep] if metric == "hd95" else means[keep]
        expected = [(result.case_ids[i], means[i]) for i in keep[np.argsort(key, kind="stable")][:3]]
        assert list(stats.worst) == expected
    assert result.worst("hd95", 1)[0] == ("3", math.inf)
    assert dict(result.aggregate("hd95").reasons) == {"empty prediction": 1}  # class 2 of case 3
    assert result.worst("dice_similarity_coefficient", 1, class_id=1)[0][0] == "4"


def test_explicit_classes_names_and_background() -> None:
    label = torch.zeros(1, 4, 5, 6, dtype=torch.int64)
    label[0, 1:3, 1:4, 1:4] = 1
    prediction = label.clone()
    prediction[0, 0, 0, 0] = 1
    named = Evaluator(iou, classes={"background": 0, "liver": 1, "tumour": 2}, progress=False)
    result = named.evaluate([prediction], [label], spacing=(1.0, 1.0, 1.0))
    assert result.classes == {1: "liver", 2: "tumour"}
    assert result.table("iou")[0].tolist() == pytest.approx([18 / 19, 1.0])  # class 2 empty on both sides: if_empty = 1
    with_background = Evaluator(iou, classes=[0, 1], include_background=True, progress=False)
    expected = iou(prediction, label, include_background=True, reduction="none", spatial_dims=3).double().numpy()
    np.testing.assert_allclose(with_background.evaluate([prediction], [label]).table("iou")[0], expected)


def test_csv_and_json_exports(tmp_path: Path) -> None:
    pred, ref, _ = make_folders(tmp_path)
    metrics = [*standard_metrics(["dice", "hd95"]), ("empty_nan", partial(dice_similarity_coefficient,
                                                                           if_empty=math.nan))]
    result = Evaluator(*metrics, classes=[1, 2, 5], progress=False).evaluate_folders(pred, ref)
    result.save_csv(tmp_path / "out" / "metrics.csv")
    result.save_json(tmp_path / "out" / "summary.json", worst_n=2)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "metrics.csv").read_text(encoding="utf-8"))))
    rows = [row for row in rows if row["case"]]  # the summary rows (mean, std...) have no case
    assert len(rows) == 3 * 4 and rows[0].keys() == {"case", "class", "class_name", "dice", "hd95", "empty_nan"}
    for row in rows:
        i = result.case_ids.index(row["case"])
        for metric in result.metrics:
            expected = result.case_means(metric)[i] if row["class"] == "mean" else \
                result.values(metric, int(row["class"]))[i]
            np.testing.assert_equal(float(row[metric]), expected)

    def strict(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"), parse_constant=strict)
    assert summary["classes"] == {"1": "1", "2": "2", "5": "5"}
    assert summary["metrics"]["hd95"] == {"higher_is_better": False}
    assert [c["case"] for c in summary["metric_per_case"]] == result.case_ids
    first = summary["metric_per_case"][0]
    assert first["reference_file"] == str(ref / "case_000.nii.gz")
    assert first["metrics"]["1"]["dice"] == result.table("dice")[0, 0]
    assert first["metrics"]["5"]["empty_nan"] is None and first["metrics"]["5"]["hd95"] == 0.0
    assert summary["mean"]["2"]["hd95"] == pytest.approx(result.class_means("hd95")[2])
    assert summary["foreground_mean"]["dice"] == pytest.approx(np.mean(result.table("dice").mean(axis=0)))
    aggregate = summary["aggregate"]["dice"]
    assert aggregate["median"] == pytest.approx(np.median(result.case_means("dice")))
    assert [w["case"] for w in aggregate["worst"]] == [case for case, _ in result.worst("dice", 2)]


def dataset(pairs: list[tuple[np.ndarray, np.ndarray]]) -> object:
    geometry = Geometry(SPACING, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    cases = {}
    for i, (_, reference) in enumerate(pairs):
        label = torch.from_numpy(reference)[None]
        cases[f"c{i}"] = (label.float(), label, geometry)
    return dataset_from_tensors(cases)


def test_predict_and_evaluate_with_a_callable_and_a_predictor_object() -> None:
    pairs = [random_pair(seed) for seed in range(3)]
    data = dataset(pairs)
    predictions = {f"c{i}": torch.from_numpy(p)[None] for i, (p, _) in enumerate(pairs)}
    seen: list[bool] = []

    def predict(image: torch.Tensor) -> torch.Tensor:
        seen.append(torch.is_inference_mode_enabled())
        case = next(c for c in predictions if torch.equal(data.image(data.index(c)), image))
        return predictions[case][0]  # (*spatial) is accepted too

    class Predictor:
        def predict(self, image: torch.Tensor) -> torch.Tensor:
            return predict(image)[None]

    class Prediction:
        def __init__(self, labels: torch.Tensor) -> None:
            self.labels = labels

    class CasePredictor:  # the shape of mipcandy.inference.Predictor: predict_case gets the geometry
        def predict_case(self, image: torch.Tensor, geometry: Geometry, *, case_id: str) -> Prediction:
            assert geometry.spacing == SPACING and data.case_id(data.index(case_id)) == case_id
            return Prediction(predict(image)[None])

    evaluator = Evaluator(*all_metrics(), progress=False)
    expected = evaluator.evaluate(list(predictions.values()), [torch.from_numpy(r)[None] for _, r in pairs],
                                  spacing=SPACING, case_ids=list(predictions))
    for predictor in (predict, Predictor(), CasePredictor(), lambda image: iter([Prediction(predict(image))])):
        result = evaluator.predict_and_evaluate(predictor, data)
        assert result.case_ids == expected.case_ids
        for metric in expected.metrics:
            np.testing.assert_array_equal(result.table(metric), expected.table(metric))
    assert seen and all(seen)
    from_dataset = evaluator.evaluate_dataset(data, predictions)
    np.testing.assert_array_equal(from_dataset.table("hd95"), expected.table("hd95"))


def test_bad_inputs_are_refused_with_the_case_named() -> None:
    pairs = [random_pair(seed) for seed in range(2)]
    data = dataset(pairs)
    evaluator = Evaluator(dice_similarity_coefficient, progress=False)
    with pytest.raises(EvaluationError, match=r"missing \['c1'\], extra \['zz'\]"):
        evaluator.evaluate_dataset(data, {"c0": torch.zeros(1, *SHAPE, dtype=torch.int64),
                                          "zz": torch.zeros(1, *SHAPE, dtype=torch.int64)})
    with pytest.raises(EvaluationError, match=r"case 'c0'.*torch.float32.*argmax"):
        evaluator.predict_and_evaluate(lambda image: image, data)
    label = torch.from_numpy(pairs[0][1])[None]
    with pytest.raises(EvaluationError, match=r"case 'c1', class 1: metric 'pair' returned 2 values"):
        Evaluator(("pair", lambda p, r: torch.ones(2)), progress=False).evaluate([label] * 2, [label] * 2,
                                                                                  case_ids=["c1", "c2"])
    with pytest.raises(TypeError, match="cannot name"):
        Evaluator(lambda p, r: 0.0)
    with pytest.raises(ValueError, match="nsd metric needs a tolerance"):
        standard_metrics(["nsd"])


def test_parallel_workers_give_the_serial_results_in_case_order(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mipcandy.evaluation import evaluator as evaluator_module

    monkeypatch.setattr(evaluator_module, "available_cpus", lambda: 4)  # threads even on a one-CPU machine
    pred, ref, pairs = make_folders(tmp_path, n=6)
    threads = torch.get_num_threads()
    serial = Evaluator(*all_metrics(), classes=[1, 2, 3], progress=False).evaluate_folders(pred, ref)
    parallel = Evaluator(*all_metrics(), classes=[1, 2, 3], progress=False, workers=3).evaluate_folders(pred, ref)
    assert torch.get_num_threads() == threads
    assert parallel.case_ids == serial.case_ids and list(parallel.classes) == list(serial.classes)
    for metric in serial.metrics:
        np.testing.assert_array_equal(parallel.table(metric), serial.table(metric))
    assert [case.prediction_file for case in parallel] == [case.prediction_file for case in serial]
    sides = [[result.empty_side(i, c) for i in range(6) for c in result.classes] for result in (serial, parallel)]
    assert sides[0] == sides[1] and "both empty" in sides[0]  # class 3 is in no file
    write_label(pred / "case_004.mha", pairs[4][0][:, :, :-1])
    with pytest.raises(EvaluationError, match=r"case 'case_004'"):
        Evaluator(dice_similarity_coefficient, progress=False, workers=3).evaluate_folders(pred, ref)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="workers"):
        Evaluator(dice_similarity_coefficient, workers=0)
