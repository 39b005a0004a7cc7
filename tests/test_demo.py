"""``candy demo``: its goals at full size (every class Dice >= 0.7, nothing undefined printed), the whole workflow in
its reduced test mode, a second run, and a missing bundle."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mipcandy.cli import main
from mipcandy.cli.demo_command import DATASET_NAME, MARKER

UNDEFINED = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def _dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float:
    """Dice by its definition, 2|A and B| / (|A| + |B|), computed here rather than by the Evaluator."""
    a, b = prediction == label, reference == label
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _experiments(output: Path) -> list[Path]:
    return sorted((output / DATASET_NAME / "unet" / "fold_0").iterdir())


def test_the_default_demo_scores_every_class_and_prints_nothing_undefined(candy_cli, tmp_path) -> None:
    output = tmp_path / "demo"
    result = candy_cli("demo", "--output", str(output), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert not UNDEFINED.search(result.stdout), UNDEFINED.search(result.stdout)
    raw = output / "raw" / DATASET_NAME
    labels = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))["labels"]
    report = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
    for name, label in labels.items():
        if label == 0:
            continue
        assert report["mean"][str(label)]["dice"] >= 0.7, (name, report["mean"][str(label)])
        ours = []
        for reference in sorted((raw / "labelsTs").iterdir()):
            predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(output / "predictions" / reference.name)))
            ours.append(_dice(predicted, sitk.GetArrayFromImage(sitk.ReadImage(str(reference))), label))
        assert report["mean"][str(label)]["dice"] == pytest.approx(np.mean(ours), abs=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_quick_demo_runs_the_whole_workflow_and_a_second_one_replaces_it(candy_cli, tmp_path, ndim) -> None:
    output = tmp_path / "demo"
    result = candy_cli("demo", "--quick", "--ndim", str(ndim), "--device", "cpu", "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    raw = output / "raw" / DATASET_NAME
    assert (raw / "inspection.json").is_file() and (output / MARKER).is_file()
    (experiment,) = _experiments(output)
    for name in ("config.json", "metrics.csv", "logs.txt", "progress.png", "checkpoint_best.safetensors"):
        assert (experiment / name).is_file(), name
    test_cases = sorted(p.name.split("_0000")[0] for p in (raw / "imagesTs").glob("*_0000*"))
    ending = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))["file_ending"]
    assert sorted(p.name.removesuffix(ending) for p in (output / "predictions").iterdir()) == test_cases
    report = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
    assert sorted(case["case"] for case in report["metric_per_case"]) == test_cases
    for text in ("experiment folder:", "predictions:", "evaluation:", "worst case"):
        assert text in result.stdout
    again = candy_cli("demo", "--quick", "--ndim", str(ndim), "--device", "cpu", "--output", str(output))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Replacing the earlier demo in {output}" in again.stdout
    (replaced,) = _experiments(output)
    assert replaced != experiment


def test_a_folder_the_demo_did_not_make_is_refused_untouched(tmp_path, capsys) -> None:
    (tmp_path / "mine.txt").write_text("keep", encoding="utf-8")
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 2
    assert "is not empty and was not made by candy demo" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_without_its_bundle_the_demo_says_how_to_install_it_before_any_work(candy_cli, tmp_path) -> None:
    output = tmp_path / "demo"
    result = candy_cli("demo", "--output", str(output), env={"CANDY_PLUGINS": ""})
    assert result.returncode == 2
    assert "the demo trains the 'unet' bundle, which cannot be used" in result.stderr
    assert "pip install -c constraints.txt -e plugins/unet" in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()


def test_the_demo_data_hides_no_class() -> None:
    from mipcandy.cli.demo_command import BIAS_STRENGTH, CHANNELS, DATA_SEED, MODALITY, PLANS
    from mipcandy.data.synthetic import make_synthetic_dataset, synthetic_case

    plan = PLANS[3]
    for index in range(plan.num_train + plan.num_test):
        _, label = synthetic_case(index, shape=plan.shape, spacing=(2.0, 1.0, 1.0), num_classes=3,
                                  num_channels=CHANNELS, modality=MODALITY, seed=DATA_SEED,
                                  object_scale=plan.object_scale, bias_strength=BIAS_STRENGTH,
                                  min_voxels=plan.min_voxels)
        assert min(int((label == k).sum()) for k in (1, 2)) >= plan.min_voxels
    with pytest.raises(ValueError, match="object_scale"):
        make_synthetic_dataset("unused", object_scale=(0.5, 0.2))
