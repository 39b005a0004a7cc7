"""``candy evaluate`` end to end through its run() with parsed arguments, on label files written by SimpleITK."""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mipcandy.cli import evaluate_command
from mipcandy.evaluation import Evaluator
from mipcandy.evaluation.result import EvalResult
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


# ---- undefined values and class names ------------------------------------------------------------------------------

def per_case_hd95(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    p, r = (torch.from_numpy(a)[None] for a in (prediction, reference))
    return hd95(p, r, spacing=SPACING, reduction="none").double().numpy()


def test_an_empty_prediction_is_left_out_of_the_means_and_counted(folders, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref, cases = folders
    missed = cases["liver_1"][0].copy()
    missed[missed == 2] = 0  # the tumour is not predicted at all: HD95 to an empty mask is infinite
    write_label(pred / "liver_1.nii.gz", missed)
    cases["liver_1"] = (missed, cases["liver_1"][1])
    assert candy_evaluate(str(pred), str(ref), "--metrics", "dice,hd95", "--json", str(tmp_path / "s.json"),
                          "--csv", str(tmp_path / "m.csv")) == 0
    out = capsys.readouterr().out
    assert not re.search(r"\b(inf|nan)\b", out, re.IGNORECASE), out  # a person reads numbers and reasons
    assert "hd95 undefined in 1 of 3 cases" in out and "left out of mean, std and median" in out
    table = np.stack([per_case_hd95(*cases[name]) for name in sorted(cases)])  # (cases, classes) from the metric
    assert np.isinf(table[1, 1]) and np.isfinite(np.delete(table, 1, axis=0)).all()
    defined = table.mean(axis=1)[[0, 2]]
    summary = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    hd = summary["aggregate"]["hd95"]
    assert hd["mean"] == pytest.approx(defined.mean()) and hd["std"] == pytest.approx(defined.std())
    assert hd["median"] == pytest.approx(np.median(defined)) and hd["count"] == 2 and hd["undefined"] == 1
    # "empty prediction" once the evaluator records which side is empty; "infinite" says the same without it
    assert sum(hd["reasons"].values()) == 1 and set(hd["reasons"]) <= {"empty prediction", "infinite"}
    assert summary["mean"]["2"]["hd95"] == pytest.approx(np.delete(table[:, 1], 1).mean())
    assert summary["aggregate"]["dice"]["undefined"] == 0 and summary["policy"].startswith("Mean, std and median")
    rows = {r["class_name"]: r for r in csv.DictReader((tmp_path / "m.csv").open(encoding="utf-8")) if not r["case"]}
    assert float(rows["tumour: mean over defined cases"]["hd95"]) == pytest.approx(np.delete(table[:, 1], 1).mean())
    assert rows["tumour: defined cases"]["hd95"] == "2" and rows["mean over classes: defined cases"]["dice"] == "3"


def test_help_states_the_policy() -> None:
    parser = argparse.ArgumentParser(prog="candy evaluate")
    evaluate_command.configure(parser)
    text = " ".join(parser.format_help().split())
    assert "taken over the cases where it is defined (finite)" in text and "empty prediction" in text


def test_reasons_name_the_empty_side() -> None:
    reference = torch.zeros(1, 4, 6, 6, dtype=torch.int64)
    reference[0, 1:3, 1:4, 1:4] = 1
    prediction = torch.zeros_like(reference)
    prediction[0, 1:3, 2:5, 2:5] = 2
    nan_dice = ("dice", partial(dice_similarity_coefficient, if_empty=math.nan))
    plain = Evaluator(nan_dice, hd95, classes=[1, 2, 3], progress=False).evaluate([prediction], [reference])
    # Which side holds each class, from the masks themselves: class 1 only in the reference, 2 only in the
    # prediction, 3 in neither.
    presence = np.array([[[bool((prediction == c).any()), bool((reference == c).any())] for c in (1, 2, 3)]])
    result = EvalResult(plain.case_ids, plain.metrics, plain.classes, np.stack([plain.table(m) for m in plain.metrics],
                                                                               axis=1),
                        lower_is_better=["hd95"], presence=presence)
    assert result.undefined_reasons("hd95", 0, 1) == ["empty prediction"]
    assert result.undefined_reasons("hd95", 0, 2) == ["empty reference"]
    assert result.undefined_reasons("dice", 0, 3) == ["both empty"] and result.undefined_reasons("hd95", 0, 3) == []
    assert result.aggregate("hd95").reasons == {"empty prediction": 1, "empty reference": 1}
    summary = result.to_dict()
    assert summary["metric_per_case"][0]["empty"] == {"1": "empty prediction", "2": "empty reference",
                                                      "3": "both empty"}
    assert summary["undefined"]["3"] == {"dice": {"both empty": 1}}
    named = result.with_class_names({1: "liver"})
    assert named.classes == {1: "liver", 2: "2", 3: "3"} and named.aggregate("hd95") == result.aggregate("hd95")


def test_class_names_come_from_the_labels_folders_dataset(folders, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref, _ = folders  # tmp_path/dataset.json sits beside ref/, as in nnU-Net's layout
    assert candy_evaluate(str(pred), str(ref), "--json", str(tmp_path / "s.json")) == 0
    assert "Class names from" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["classes"] == {"1": "liver", "2": "tumour"}
    # nnU-Net v1 / Decathlon layout: ids as keys
    (ref / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ", "2": "lesion"}}),
                                      encoding="utf-8")
    assert candy_evaluate(str(pred), str(ref), "--json", str(tmp_path / "s.json")) == 0
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["classes"] == {"1": "organ", "2": "lesion"}
    (ref / "dataset.json").write_text("{not json", encoding="utf-8")
    assert candy_evaluate(str(pred), str(ref), "--json", str(tmp_path / "s.json")) == 0
    assert "not naming classes from" in capsys.readouterr().err
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["classes"] == {"1": "1", "2": "2"}
