"""Damaged inputs are refused where they are read, with the file named: truncated files of every format, NaN and
infinite voxels in NIfTI, empty and non-image files, and a 2D case among 3D ones. Every bad file is made for real
(written by SimpleITK, then cut or patched byte by byte)."""
from __future__ import annotations

import argparse
import gzip
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mipcandy.cli import evaluate_command, inspect_command
from mipcandy.data.dataset import DatasetError
from mipcandy.data.integrity import CorruptImageError
from mipcandy.data.io import load_image
from mipcandy.data.nnunet import NNUNetDataset

RNG = np.random.default_rng(12)
LABEL = RNG.integers(0, 3, (20, 24, 28), dtype=np.uint8)  # compresses little: a cut keeps the header


def write(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=compress)
    return path


def cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def vox_offset(header: bytes) -> int:
    """NIfTI-1 vox_offset (float32 at byte 108), read as the standard lays it out."""
    return int(struct.unpack_from("<f", header, 108)[0])


def expected_found(message: str) -> tuple[int, int]:
    match = re.search(r"expected (\d+) bytes of [a-z ]+, found (\d+)", message)
    assert match, message
    return int(match[1]), int(match[2])


# ---- truncated files -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_refused_with_the_byte_counts(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"label{suffix}", LABEL)
    full = gzip.decompress(path.read_bytes()) if suffix == ".nii.gz" else path.read_bytes()
    # The hazard: SimpleITK reads the cut file without complaint and the lost voxels come back as 0.
    cut(path, 0.6)
    silent = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert silent.shape == LABEL.shape and not np.array_equal(silent, LABEL)
    with pytest.raises(CorruptImageError, match="truncated") as info:
        load_image(path, is_label=True)
    message = str(info.value)
    assert str(path) in message and "re-export or re-download" in message and "\n" not in message
    expected, found = expected_found(message)
    assert expected == LABEL.size  # uint8: one byte per voxel
    if suffix == ".nii":
        assert found == path.stat().st_size - vox_offset(full)
    else:
        stream = zlib.decompressobj(wbits=31)
        assert found == len(stream.decompress(path.read_bytes())) - vox_offset(full) < expected


def test_gzip_cut_after_the_voxels_is_still_truncated(tmp_path: Path) -> None:
    path = write(tmp_path / "label.nii.gz", LABEL)
    path.write_bytes(path.read_bytes()[:-4])  # only the gzip trailer (size field) is lost
    with pytest.raises(CorruptImageError, match="gzip stream ends before its end marker"):
        load_image(path)


@pytest.mark.parametrize(("name", "compress"), [("t.mha", False), ("t.mha", True), ("t.mhd", False)])
def test_truncated_metaimage_says_how_many_bytes_are_missing(tmp_path: Path, name: str, compress: bool) -> None:
    path = write(tmp_path / name, LABEL.astype(np.int16), compress=compress)
    data_file = path if name.endswith(".mha") else path.with_suffix(".raw")
    cut(data_file, 0.6)
    with pytest.raises(CorruptImageError) as info:
        load_image(path)
    expected, found = expected_found(str(info.value))
    if not compress:
        assert expected == LABEL.size * 2
    assert found < expected and str(path) in str(info.value)


def test_truncated_tiff_stack_loses_no_pages_silently(tmp_path: Path) -> None:
    path = write(tmp_path / "stack.tif", RNG.integers(0, 1000, (6, 20, 24)).astype(np.int16))
    cut(path, 0.7)
    assert sitk.ReadImage(str(path)).GetSize()[2] < 6  # the hazard: SimpleITK returns fewer pages
    with pytest.raises(CorruptImageError, match="truncated") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_bmp_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "slice.bmp", RNG.integers(0, 255, (40, 30)).astype(np.uint8))
    cut(path, 0.6)
    sitk.ReadImage(str(path))  # the hazard: SimpleITK reads it, missing rows as zeros
    with pytest.raises(CorruptImageError) as info:
        load_image(path)
    expected, found = expected_found(str(info.value))
    assert expected == 40 * 32  # rows padded to 4 bytes
    assert found < expected


def test_intact_files_of_every_format_still_load(tmp_path: Path) -> None:
    volume = RNG.integers(0, 1000, (4, 6, 8)).astype(np.int16)
    for name in ("a.nii.gz", "a.nii", "a.mha", "a.mhd", "a.nrrd", "a.tif"):
        tensor, _ = load_image(write(tmp_path / name, volume))
        assert np.array_equal(tensor[0].numpy(), volume), name
    flat = RNG.integers(0, 255, (7, 9)).astype(np.uint8)
    for name in ("a.png", "a.bmp"):
        tensor, _ = load_image(write(tmp_path / name, flat))
        assert np.array_equal(tensor[0].numpy(), flat), name


def write_dicom_slices(folder: Path, volume: np.ndarray) -> None:
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.shape[0]):
        image = sitk.GetImageFromArray(volume[k])
        for tag, value in {"0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.2.1125.7",
                           "0020|000e": "1.2.826.0.1.3680043.2.1125.7.1", "0020|0013": str(k),
                           "0008|0018": f"1.2.826.0.1.3680043.2.1125.7.1.{k}", "0020|0032": f"0\\0\\{k}",
                           "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_with_a_truncated_slice_is_refused(tmp_path: Path) -> None:
    volume = RNG.integers(0, 1000, (5, 8, 9)).astype(np.int16)
    write_dicom_slices(tmp_path / "ct", volume)
    tensor, _ = load_image(tmp_path / "ct")
    assert np.array_equal(tensor[0].numpy(), volume)
    cut(tmp_path / "ct" / "slice_002.dcm", 0.9)
    with pytest.raises(CorruptImageError, match="slice_002.dcm") as info:
        load_image(tmp_path / "ct")
    assert "re-export or re-download" in str(info.value)


# ---- NaN and infinity ----------------------------------------------------------------------------------------------

def nifti_with_non_finite(path: Path, nan: int, inf: int) -> np.ndarray:
    """A float32 NIfTI written by SimpleITK whose voxel bytes are then patched with numpy."""
    values = RNG.random((5, 6, 7)).astype(np.float32)
    write(path, values)
    data = bytearray(gzip.decompress(path.read_bytes()))
    voxels = np.frombuffer(data, dtype="<f4", count=values.size, offset=vox_offset(bytes(data)))
    patched = voxels.copy()
    patched[:nan] = np.nan
    patched[nan : nan + inf] = np.inf
    offset = vox_offset(bytes(data))
    data[offset : offset + patched.nbytes] = patched.tobytes()
    path.write_bytes(gzip.compress(bytes(data)))
    return patched.reshape(values.shape)


def test_nan_and_inf_in_nifti_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    nifti_with_non_finite(path, nan=3, inf=2)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # the hazard: read as 0
    with pytest.raises(ValueError, match=r"holds 3 NaN and 2 infinite voxel value\(s\) out of 210") as info:
        load_image(path)
    assert str(path) in str(info.value)


def big_endian_nifti(path: Path, values: np.ndarray, *, slope: float = 1.0) -> None:
    """A NIfTI-1 file in big-endian byte order, its header written field by field from the standard."""
    header = bytearray(352)
    struct.pack_into(">i", header, 0, 348)
    struct.pack_into(">8h", header, 40, values.ndim, *reversed(values.shape), *[1] * (7 - values.ndim))
    struct.pack_into(">2h", header, 70, 16, 32)  # datatype float32, bitpix
    struct.pack_into(">8f", header, 76, 1.0, 0.5, 0.75, 2.0, 1.0, 1.0, 1.0, 1.0)  # pixdim
    struct.pack_into(">3f", header, 108, 352.0, slope, 0.0)  # vox_offset, scl_slope, scl_inter
    header[344:348] = b"n+1\0"
    path.write_bytes(gzip.compress(bytes(header) + values.astype(">f4").tobytes()))


@pytest.mark.parametrize("slope", [1.0, 2.0])
def test_big_endian_nifti_reads_as_simpleitk_reads_it(tmp_path: Path, slope: float) -> None:
    values = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    path = tmp_path / "be.nii.gz"
    big_endian_nifti(path, values, slope=slope)
    reference = sitk.ReadImage(str(path))
    tensor, geometry = load_image(path)
    np.testing.assert_array_equal(tensor[0].numpy(), sitk.GetArrayFromImage(reference).astype(np.float32))
    np.testing.assert_allclose(tensor[0].numpy(), values * slope, rtol=1e-6)
    assert geometry.spacing == tuple(reversed(reference.GetSpacing())) == (2.0, 0.75, 0.5)
    values[1, 2, 3] = np.nan
    big_endian_nifti(path, values, slope=slope)
    with pytest.raises(ValueError, match="holds 1 NaN and 0 infinite"):
        load_image(path)


def test_nifti_2_is_named_as_such(tmp_path: Path) -> None:
    header = bytearray(544)
    struct.pack_into("<i", header, 0, 540)
    header[4:12] = b"n+2\0\r\n\x1a\n"
    path = tmp_path / "v2.nii.gz"
    path.write_bytes(gzip.compress(bytes(header) + bytes(24)))
    with pytest.raises(CorruptImageError, match="NIfTI-2 file, which SimpleITK cannot read"):
        load_image(path)


# ---- empty and non-image files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["case.nii.gz", "case.nii", "case.mha", "case.png"])
@pytest.mark.parametrize("content", [b"", b"ID,value\n1,2\n" * 40])
def test_empty_or_non_image_file_is_a_one_line_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorruptImageError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert ("empty (0 bytes)" in message) == (content == b"")


# ---- through the commands ------------------------------------------------------------------------------------------

def make_dataset(root: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    (root / "dataset.json").parent.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                   "labels": {"background": 0, "a": 1, "b": 2}}), encoding="utf-8")
    for case, shape in shapes.items():
        label = np.zeros(shape, dtype=np.uint8)
        label[..., 2:6, 3:9] = 1
        label[..., 3:5, 4:7] = 2
        write(root / "imagesTr" / f"{case}_0000.nii.gz", RNG.random(shape).astype(np.float32))
        write(root / "labelsTr" / f"{case}.nii.gz", label)
    return root


def run_command(module, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    module.configure(parser)
    return module.run(parser.parse_args(list(argv)))


def test_inspect_refuses_a_truncated_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "ds", {"c0": (10, 12, 14), "c1": (10, 12, 14)})
    cut(root / "labelsTr" / "c1.nii.gz", 0.6)
    assert run_command(inspect_command, str(root)) == 2
    err = capsys.readouterr().err
    assert "case 'c1'" in err and "c1.nii.gz is truncated" in err and "Traceback" not in err


def test_evaluate_refuses_a_truncated_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "pred" / "c0.nii.gz", LABEL)
    reference = write(tmp_path / "ref" / "c0.nii.gz", LABEL)
    cut(reference, 0.6)
    assert run_command(evaluate_command, str(tmp_path / "pred"), str(tmp_path / "ref")) == 2
    assert "c0.nii.gz is truncated" in capsys.readouterr().err


def test_a_2d_case_among_3d_cases_names_the_case_and_both_shapes(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "ds", {"c0": (6, 10, 12), "c1": (10, 12), "c2": (6, 10, 12)})
    NNUNetDataset(root)[1]  # each case is readable on its own
    assert run_command(inspect_command, str(root)) == 2
    err = capsys.readouterr().err
    assert "case 'c1' is 2D with shape (10, 12)" in err and "case 'c0' is 3D with shape (6, 10, 12)" in err


@pytest.mark.parametrize(("content", "message"), [(b"", r"is empty \(0 bytes\)"), (b"<html>" * 99, "is not a NIfTI")])
def test_non_image_file_in_a_dataset_names_the_case(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    content: bytes, message: str) -> None:
    root = make_dataset(tmp_path / "ds", {"c0": (6, 10, 12)})
    (root / "imagesTr" / "c0_0000.nii.gz").write_bytes(content)
    with pytest.raises(DatasetError, match=f"case 'c0': .*c0_0000.nii.gz {message}"):
        NNUNetDataset(root)[0]
    assert run_command(inspect_command, str(root)) == 2
    assert "Traceback" not in capsys.readouterr().err
