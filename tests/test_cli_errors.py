"""One error policy for every command: expected failures are one message and exit 2; --debug shows the traceback."""
from __future__ import annotations

import errno

import numpy as np
import pytest
import SimpleITK as sitk

from mipcandy.cli import evaluate_command, main
from mipcandy.cli.errors import describe


@pytest.fixture
def folders(tmp_path):
    """A prediction and a reference folder holding one real 3D label map each."""
    for name in ("pred", "ref"):
        (tmp_path / name).mkdir()
        label = np.zeros((4, 6, 6), np.uint8)
        label[1:3, 2:5, 2:5] = 1
        sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / name / "liver_0.nii.gz"))
    return tmp_path / "pred", tmp_path / "ref"


def test_an_unwritable_report_is_one_message_naming_the_path(folders, tmp_path, capsys) -> None:
    pred, ref = folders
    (tmp_path / "taken").write_text("a file, not a folder", encoding="utf-8")
    target = tmp_path / "taken" / "summary.json"
    assert main(["evaluate", str(pred), str(ref), "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("candy evaluate: ") and str(tmp_path / "taken") in err and "Traceback" not in err


@pytest.mark.parametrize(("code", "hint"), [(errno.EACCES, "permissions"), (errno.ENOSPC, "disk is full"),
                                            (errno.EROFS, "read-only")])
def test_os_errors_get_a_hint(code: int, hint: str) -> None:
    failure = describe(OSError(code, "refused by the system", "/data/out/case_1.nii.gz"))
    assert failure.status == 2 and "case_1.nii.gz" in failure.message and hint in failure.message


def test_a_corrupt_safetensors_file_is_an_expected_failure(tmp_path) -> None:
    from safetensors import SafetensorError, safe_open

    (tmp_path / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SafetensorError) as caught:
        safe_open(str(tmp_path / "state.safetensors"), framework="numpy")
    failure = describe(caught.value)
    assert failure.status == 2 and "truncated or corrupt" in failure.message


def _fault(exception: BaseException):
    def raise_it(*args, **kwargs):
        raise exception

    return raise_it


def test_an_unexpected_error_is_reported_as_a_bug_without_traceback(folders, monkeypatch, capsys) -> None:
    pred, ref = folders
    monkeypatch.setattr(evaluate_command, "_dataset_class_names", _fault(TypeError("'NoneType' is not iterable")))
    assert main(["evaluate", str(pred), str(ref)]) == 1
    err = capsys.readouterr().err
    assert "unexpected TypeError: 'NoneType' is not iterable" in err and "--debug" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_debug_lets_the_traceback_through(folders, tmp_path, monkeypatch, where) -> None:
    _, ref = folders
    argv = ["evaluate", str(tmp_path / "missing"), str(ref)]
    assert main(argv) == 2
    if where == "before":
        argv = ["--debug", *argv]
    elif where == "after":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("CANDY_DEBUG", "1")
    with pytest.raises((FileNotFoundError, NotADirectoryError)):
        main(argv)


def test_ctrl_c_is_one_line(folders, monkeypatch, capsys) -> None:
    pred, ref = folders
    monkeypatch.setattr(evaluate_command, "_dataset_class_names", _fault(KeyboardInterrupt()))
    assert main(["evaluate", str(pred), str(ref)]) == 130
    assert capsys.readouterr().err == "candy evaluate: interrupted\n"


def test_evaluate_workers_score_like_one_worker(folders, tmp_path, capsys) -> None:
    pred, ref = folders
    for i in range(1, 4):
        label = np.zeros((4, 6, 6), np.uint8)
        label[1:3, 1 + i % 2 : 5, 2:5] = 1
        sitk.WriteImage(sitk.GetImageFromArray(label), str(pred / f"liver_{i}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label[:, ::-1].copy()), str(ref / f"liver_{i}.nii.gz"))
    assert main(["evaluate", str(pred), str(ref), "--csv", str(tmp_path / "one.csv")]) == 0
    assert main(["evaluate", str(pred), str(ref), "--csv", str(tmp_path / "three.csv"), "--workers", "3"]) == 0
    assert (tmp_path / "one.csv").read_text(encoding="utf-8") == (tmp_path / "three.csv").read_text(encoding="utf-8")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", str(pred), str(ref), "--workers", "0"])
    assert "expected a positive whole number, got '0'" in capsys.readouterr().err
