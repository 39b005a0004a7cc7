"""``candy evaluate`` end to end through its run() with parsed arguments, on label files written by SimpleITK."""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mipcandy.cli import evaluate_command
from mipcandy.metrics import dice_similarity_coefficient, hd95, nsd

SPACING = (2.5, 0.8, 1.2)  # tensor axis order (z, y, x)


def write_label(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(reversed(SPACING)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    cases = {}
    for i in range(3):
        reference = np.zeros((5, 9, 8), dtype=np.int64)
        reference[1:4, 2:7, 2:6] = 1
        reference[2:4, 3:5, 3 + i % 2 : 5] = 2
        prediction = np.roll(reference, i, axis=1)
        name = f"liver_{i}"
        write_label(tmp_path / "pred" / f"{name}.nii.gz", prediction)
        write_label(tmp_path / "ref" / f"{name}.nii.gz", reference)
        cases[name] = (prediction, reference)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}),
                                           encoding="utf-8")
    return tmp_path / "pred", tmp_path / "ref", cases


def candy_evaluate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="candy evaluate")
    evaluate_command.configure(parser)
    return evaluate_command.run(parser.parse_args(list(argv)))


def test_end_to_end_writes_json_csv_and_tables(folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref, cases = folders
    status = candy_evaluate(str(pred), str(ref), "--metrics", "dice,hd95,nsd", "--nsd-tolerance", "1",
                            "--labels", str(tmp_path / "dataset.json"), "--json", str(tmp_path / "s.json"),
                            "--csv", str(tmp_path / "m.csv"))
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "worst case by dice: liver_2" in out.out and "foreground mean" in out.out and "tumour" in out.out
    summary = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert summary["classes"] == {"1": "liver", "2": "tumour"}
    assert list(summary["metrics"]) == ["dice", "hd95", "nsd"]
    for entry in summary["metric_per_case"]:
        p, r = (torch.from_numpy(a)[None] for a in cases[entry["case"]])
        direct = {"dice": dice_similarity_coefficient(p, r, reduction="none", spatial_dims=3),
                  "hd95": hd95(p, r, spacing=SPACING, reduction="none"),
                  "nsd": nsd(p, r, tolerance=1.0, spacing=SPACING, reduction="none")}
        for metric, values in direct.items():
            got = [entry["metrics"][c][metric] for c in ("1", "2")]
            np.testing.assert_allclose(got, values.double().numpy(), rtol=1e-6)
            assert entry["mean"][metric] == pytest.approx(float(values.double().mean()))
    per_case = [entry["mean"]["dice"] for entry in summary["metric_per_case"]]
    assert summary["aggregate"]["dice"]["mean"] == pytest.approx(np.mean(per_case))
    assert summary["aggregate"]["dice"]["std"] == pytest.approx(np.std(per_case))
    assert summary["foreground_mean"]["dice"] == pytest.approx(np.mean([summary["mean"][c]["dice"] for c in "12"]))
    rows = list(csv.DictReader((tmp_path / "m.csv").open(encoding="utf-8")))
    assert [(r["case"], r["class_name"]) for r in rows[:3]] == [("liver_0", "liver"), ("liver_0", "tumour"),
                                                               ("liver_0", "mean over classes")]


def test_default_metrics_and_no_files_written(folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref, _ = folders
    assert candy_evaluate(str(pred), str(ref)) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("dice", "iou", "hd95", "assd")) and "nsd" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "pred", "ref"]


def test_bad_input_exits_2_with_a_message(folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref, _ = folders
    (pred / "liver_1.nii.gz").unlink()
    assert candy_evaluate(str(pred), str(ref)) == 2
    err = capsys.readouterr().err
    assert err.startswith("candy evaluate: ") and "without a prediction: liver_1" in err and str(pred) in err
    assert candy_evaluate(str(ref), str(ref), "--metrics", "nsd") == 2
    assert "--nsd-tolerance" in capsys.readouterr().err
    assert candy_evaluate(str(ref), str(tmp_path / "nowhere")) == 2
    assert "nowhere is not a folder" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"labels": {"liver": 1}}', encoding="utf-8")
    assert candy_evaluate(str(ref), str(ref), "--labels", str(tmp_path / "bad.json")) == 2
    assert "bad.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        candy_evaluate(str(ref), str(ref), "--metrics", "dice,volume")
    assert caught.value.code == 2 and "unknown metric" in capsys.readouterr().err


def test_command_module_does_not_import_torch() -> None:
    code = ("import sys, argparse; from mipcandy.cli import evaluate_command as c; "
            "c.configure(argparse.ArgumentParser()); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
