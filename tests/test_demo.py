"""``candy demo`` end to end, in its reduced-size test mode."""
from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("ndim", [2, 3])
def test_demo_runs_the_whole_workflow(candy_cli, tmp_path, ndim) -> None:
    output = tmp_path / "demo"
    result = candy_cli("demo", "--quick", "--ndim", str(ndim), "--device", "cpu", "--output", str(output),
                       env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-3000:]
    raw = output / "raw" / "Dataset900_CandyDemo"
    assert (raw / "inspection.json").is_file()
    experiments = sorted((output / "UNetTrainer").iterdir())
    assert len(experiments) == 1
    experiment = experiments[0]
    for name in ("config.json", "metrics.csv", "logs.txt", "progress.png", "checkpoint_best.safetensors"):
        assert (experiment / name).is_file(), name
    config = json.loads((experiment / "config.json").read_text(encoding="utf-8"))
    assert config["preprocessing_plan"] is not None and config["labels"]["background"] == 0
    test_cases = sorted(p.name.split("_0000")[0] for p in (raw / "imagesTs").iterdir())
    ending = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))["file_ending"]
    predicted = sorted(p.name.removesuffix(ending) for p in (output / "predictions").iterdir())
    assert predicted == test_cases
    report = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
    assert sorted(case["case"] for case in report["metric_per_case"]) == test_cases
    assert set(report["metric_per_case"][0]["metrics"]["1"]) == {"dice", "iou", "hd95", "assd", "nsd"}
    for text in ("experiment folder:", "predictions:", "evaluation:", "worst case"):
        assert text in result.stdout
    again = candy_cli("demo", "--quick", "--ndim", str(ndim), "--output", str(output))
    assert again.returncode == 2 and "already holds a demo" in again.stderr
