"""Image I/O through real files written and read by SimpleITK: formats, geometry, DICOM, errors, fast cache."""
from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import mipcandy.data as data_package
from mipcandy.data import geometry as geometry_module
from mipcandy.data import io
from mipcandy.data.geometry import Geometry
from mipcandy.data.io import (
    GeometryDroppedWarning,
    fast_load,
    fast_metadata,
    fast_save,
    image_suffix,
    load_image,
    save_image,
)

MEDICAL = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


def rotation(ax: float, az: float) -> tuple[float, ...]:
    """Row-major 3x3 rotation about x then z: an oblique direction with no zero entries."""
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return tuple(float(v) for v in (rz @ rx).ravel())


OBLIQUE = Geometry(spacing=(2.5, 0.8, 0.7), origin=(1.1, -2.2, 3.3), direction=rotation(0.2, 0.3))
OBLIQUE_2D = Geometry(spacing=(0.6, 0.35), origin=(-4.5, 7.25), direction=(0.8, -0.6, 0.6, 0.8))


def assert_geometry_close(actual: Geometry, expected: Geometry, rel: float) -> None:
    for name in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(actual, name), getattr(expected, name), rtol=rel, atol=rel, err_msg=name)


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".")]


# ---- Geometry ------------------------------------------------------------------------------------------------


def test_geometry_round_trips_exactly_through_json_and_sitk() -> None:
    again = Geometry.from_dict(json.loads(json.dumps(OBLIQUE.to_dict())))
    assert again == OBLIQUE
    image = sitk.Image(6, 5, 4, sitk.sitkFloat32)
    OBLIQUE.apply_to(image)
    assert image.GetSpacing() == (0.7, 0.8, 2.5)  # SimpleITK order is (x, y, z)
    assert Geometry.from_sitk(image) == OBLIQUE
    assert OBLIQUE.ndim == 3 and OBLIQUE_2D.ndim == 2 and len(OBLIQUE_2D.direction) == 4
    assert Geometry.identity(2) == Geometry.from_sitk(sitk.Image(3, 4, sitk.sitkUInt8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1.0, 1.0), "origin": (0.0,), "direction": (1.0, 0.0, 0.0, 1.0)}, "Inconsistent"),
        ({"spacing": (1.0, 0.0), "origin": (0.0, 0.0), "direction": (1.0, 0.0, 0.0, 1.0)}, "positive"),
        ({"spacing": (1.0, math.nan), "origin": (0.0, 0.0), "direction": (1.0, 0.0, 0.0, 1.0)}, "finite"),
    ],
)
def test_geometry_rejects_invalid_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Geometry(**kwargs)
    with pytest.raises(ValueError, match="lacks"):
        Geometry.from_dict({"spacing": [1.0]})


def test_geometry_module_does_not_import_simpleitk_or_torch() -> None:
    assert "torch" not in vars(geometry_module) and "sitk" not in vars(geometry_module)


def test_data_package_is_lazy_and_its_table_resolves() -> None:
    code = "import sys, mipcandy.data as d; d.Geometry; print('torch' in sys.modules, 'SimpleITK' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", env=env, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr
    for name, module in data_package._LAZY.items():
        if importlib.util.find_spec(module) is not None:  # modules of other helpers may not exist yet
            assert getattr(data_package, name) is getattr(importlib.import_module(module), name)
    assert isinstance(importlib.import_module("mipcandy.data").resample, types.ModuleType)  # never the function
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        data_package.nothing  # noqa: B018


# ---- round trips -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", MEDICAL)
def test_medical_formats_round_trip_data_and_oblique_geometry(tmp_path: Path, suffix: str) -> None:
    image = torch.randn(1, 4, 5, 6)
    path = tmp_path / f"case{suffix}"
    save_image(image, path, OBLIQUE)
    loaded, geometry = load_image(path)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, image)
    # Independent view of the same file: SimpleITK's own array and (x, y, z) spacing.
    reference = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(reference), image[0].numpy())
    assert geometry == Geometry.from_sitk(reference)
    if suffix in (".mha", ".mhd"):
        assert geometry == OBLIQUE
    elif suffix == ".nrrd":  # stores direction x spacing: float64 rounding
        assert_geometry_close(geometry, OBLIQUE, 1e-14)
    else:  # NIfTI stores spacing, origin and the quaternion as float32
        assert_geometry_close(geometry, OBLIQUE, 1e-6)
        assert geometry != OBLIQUE
    assert no_temporary_files(tmp_path)
    if suffix == ".mhd":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["case.mhd", "case.raw"]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32,
                                   np.float64])
@pytest.mark.parametrize("shape", [(4, 5, 6), (5, 7)])
def test_nifti_voxels_read_by_us_equal_simpleitk(tmp_path: Path, dtype: type, shape: tuple[int, ...]) -> None:
    # NIfTI voxels are decompressed and decoded by mipcandy (to see truncation and NaN); SimpleITK is the reference.
    values = (np.random.default_rng(3).standard_normal(shape) * 50).astype(dtype)
    image = sitk.GetImageFromArray(values)
    (OBLIQUE if len(shape) == 3 else OBLIQUE_2D).apply_to(image)
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(path))
    reference = sitk.ReadImage(str(path))
    loaded, geometry = load_image(path)
    np.testing.assert_array_equal(loaded[0].numpy(), sitk.GetArrayFromImage(reference).astype(np.float32))
    assert geometry == Geometry.from_sitk(reference)


def test_nifti_in_several_gzip_members_or_not_compressed_loads(tmp_path: Path) -> None:
    values = np.random.default_rng(4).standard_normal((4, 5, 6)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "one.nii.gz"))
    payload = gzip.decompress((tmp_path / "one.nii.gz").read_bytes())
    (tmp_path / "members.nii.gz").write_bytes(gzip.compress(payload[:500]) + gzip.compress(payload[500:]))
    (tmp_path / "plain.nii.gz").write_bytes(payload)  # named .nii.gz, stored uncompressed: nifticlib reads it too
    for name in ("members.nii.gz", "plain.nii.gz"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name))), values)
        loaded, _ = load_image(tmp_path / name)
        np.testing.assert_array_equal(loaded[0].numpy(), values)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_labels_load_as_int64_and_are_stored_narrow(tmp_path: Path, suffix: str) -> None:
    label = torch.randint(0, 4, (1, 3, 5, 6))
    label[0, 0, 0, 0] = 300  # needs 16 bits
    path = tmp_path / f"label{suffix}"
    save_image(label, path, OBLIQUE)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    loaded, _ = load_image(path, is_label=True)
    assert loaded.dtype == torch.int64 and torch.equal(loaded, label)


def test_tensor_axes_follow_simpleitk_index_order(tmp_path: Path) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    path = tmp_path / "axes.mha"
    sitk.WriteImage(image, str(path))
    tensor, geometry = load_image(path)
    assert tensor.shape == (1, 4, 5, 6) and geometry.spacing == (2.5, 0.8, 0.7)
    assert tensor[0, 3, 2, 1].item() == image.GetPixel(1, 2, 3)


def test_depth_one_file_stays_3d(tmp_path: Path) -> None:
    path = tmp_path / "slab.nii.gz"
    save_image(torch.ones(1, 1, 5, 6), path, Geometry((3.0, 1.0, 1.0), (0.0, 0.0, 9.0), Geometry.identity(3).direction))
    tensor, geometry = load_image(path)
    assert tensor.shape == (1, 1, 5, 6) and geometry.ndim == 3 and geometry.spacing[0] == 3.0


@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [(".png", torch.uint8), (".png", torch.int64), (".bmp", torch.uint8), (".tif", torch.float32)],
)
def test_2d_natural_formats_round_trip(tmp_path: Path, suffix: str, dtype: torch.dtype) -> None:
    high = 1000 if dtype == torch.int64 else 250
    data = torch.randint(0, high, (1, 7, 9)).to(dtype)
    path = tmp_path / f"slice{suffix}"
    save_image(data, path)
    loaded, geometry = load_image(path)
    assert loaded.shape == (1, 7, 9) and torch.equal(loaded, data.float())
    assert_geometry_close(geometry, Geometry.identity(2), 1e-7)  # TIFF stores spacing as a rational resolution
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if suffix == ".bmp":  # ITK expands the grey palette of an 8-bit BMP to RGB; we read it back as grey
        assert reference.shape == (7, 9, 3)
        reference = reference[..., 1]
    assert np.array_equal(reference, data[0].numpy())
    label, _ = load_image(path, is_label=True)
    assert label.dtype == torch.int64 and torch.equal(label, data.long())


def test_png_keeps_spacing_and_labels_go_to_uint16(tmp_path: Path) -> None:
    label = torch.tensor([[[0, 1], [2, 40000]]])
    path = tmp_path / "label.png"
    save_image(label, path, Geometry.identity(2, spacing=(0.5, 0.25)))
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    loaded, geometry = load_image(path, is_label=True)
    assert torch.equal(loaded, label) and geometry.spacing == (0.5, 0.25)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_rgb_pixels_become_channels(tmp_path: Path, suffix: str) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = tmp_path / f"rgb{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    tensor, geometry = load_image(path)
    assert tensor.shape == (3, 7, 9) and geometry.ndim == 2
    for channel in range(3):
        assert np.array_equal(tensor[channel].numpy(), rgb[..., channel].astype(np.float32))
    # and back: three channels are written as an RGB pixel
    save_image(tensor.to(torch.uint8), tmp_path / f"again{suffix}")
    again = sitk.ReadImage(str(tmp_path / f"again{suffix}"))
    assert again.GetNumberOfComponentsPerPixel() == 3 and np.array_equal(sitk.GetArrayFromImage(again), rgb)


def write_palette_bmp(path: Path, indices: np.ndarray, palette: list[tuple[int, int, int]]) -> None:
    """An 8-bit palette BMP written byte by byte (ITK only writes grey palettes)."""
    height, width = indices.shape
    row = (width + 3) // 4 * 4
    pixels = b"".join(bytes(indices[y].tolist()) + b"\0" * (row - width) for y in reversed(range(height)))
    colours = b"".join(bytes((b, g, r, 0)) for r, g, b in palette)
    offset = 14 + 40 + len(colours)
    header = struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, len(pixels), 2835, 2835, len(palette), 0)
    path.write_bytes(header + info + colours + pixels)


def test_palette_bmp_is_grey_only_with_a_grey_palette(tmp_path: Path) -> None:
    indices = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    write_palette_bmp(tmp_path / "colour.bmp", indices, [(255, 0, 0), (0, 0, 255)])
    colour, _ = load_image(tmp_path / "colour.bmp")
    assert colour.shape == (3, 2, 3) and colour[:, 0, 1].tolist() == [0, 0, 255]
    write_palette_bmp(tmp_path / "grey.bmp", indices, [(10, 10, 10), (200, 200, 200)])
    grey, _ = load_image(tmp_path / "grey.bmp")
    assert grey.tolist() == [[[10, 200, 200], [200, 10, 10]]]


def test_saving_geometry_a_format_cannot_hold_warns(tmp_path: Path) -> None:
    with pytest.warns(GeometryDroppedWarning, match="origin, direction") as caught:
        save_image(torch.zeros(1, 4, 4, dtype=torch.uint8), tmp_path / "x.png", OBLIQUE_2D)
    assert str(tmp_path / "x.png") in str(caught[0].message) and ".nii.gz" in str(caught[0].message)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_image(torch.zeros(1, 4, 4, dtype=torch.uint8), tmp_path / "y.png", Geometry.identity(2, (2.0, 3.0)))


def test_multichannel_volume_round_trips_as_vector_pixels(tmp_path: Path) -> None:
    image = torch.randn(2, 3, 4, 5)
    save_image(image, tmp_path / "two.nii.gz", OBLIQUE)
    assert sitk.ReadImage(str(tmp_path / "two.nii.gz")).GetNumberOfComponentsPerPixel() == 2
    assert torch.equal(load_image(tmp_path / "two.nii.gz")[0], image)


# ---- DICOM -------------------------------------------------------------------------------------------------------


def write_dicom_series(folder: Path, volume: np.ndarray, geometry: Geometry, series_uid: str) -> None:
    """One int16 slice per file, with the tags a reader needs to place the slices in space."""
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.array(geometry.direction).reshape(3, 3)
    slice_spacing, *in_plane = geometry.spacing
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study_uid = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(volume.shape[0]):
        image = sitk.GetImageFromArray(volume[k])
        image.SetSpacing(tuple(reversed(in_plane)))
        position = np.array(geometry.origin) + direction @ np.array([0.0, 0.0, k * slice_spacing])
        orientation = (*direction[:, 0], *direction[:, 1])
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT image storage
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|0060": "CT",
            "0010|0010": "Synthetic^Patient",
            "0010|0020": "SYN001",
            "0018|0050": f"{slice_spacing:.10g}",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.10g}" for v in position),
            "0020|0037": "\\".join(f"{v:.10g}" for v in orientation),
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        # Reverse file names so that only the positions give the right slice order.
        writer.SetFileName(str(folder / f"{series_uid}_{volume.shape[0] - k:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_folder_loads_with_geometry(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).integers(-1000, 2000, (5, 6, 7), dtype=np.int16)
    write_dicom_series(tmp_path / "ct", volume, OBLIQUE, "1.2.826.0.1.3680043.2.1125.2")
    tensor, geometry = load_image(tmp_path / "ct")
    assert tensor.shape == (1, 5, 6, 7) and torch.equal(tensor[0], torch.from_numpy(volume.astype(np.float32)))
    assert_geometry_close(geometry, OBLIQUE, 1e-6)


def test_dicom_folder_with_two_series_names_both(tmp_path: Path) -> None:
    volume = np.zeros((2, 3, 4), dtype=np.int16)
    uids = ["1.2.826.0.1.3680043.2.1125.3", "1.2.826.0.1.3680043.2.1125.4"]
    for uid in uids:
        write_dicom_series(tmp_path / "mixed", volume, OBLIQUE, uid)
    with pytest.raises(ValueError, match="own folder") as info:
        load_image(tmp_path / "mixed")
    assert all(uid in str(info.value) for uid in uids) and str(tmp_path / "mixed") in str(info.value)


def test_folder_without_dicom_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    with pytest.raises(ValueError, match="No DICOM series found") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


# ---- errors ------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found") as info:
        load_image(tmp_path / "absent.nii.gz")
    assert str(tmp_path / "absent.nii.gz") in str(info.value)


@pytest.mark.parametrize(
    ("name", "hint"), [("scan.jpg", "lossy"), ("slice.dcm", "pass the folder"), ("data.xyz", "supported are")]
)
def test_unsupported_extension_lists_supported(tmp_path: Path, name: str, hint: str) -> None:
    (tmp_path / name).write_bytes(b"x")
    for action in (lambda: load_image(tmp_path / name), lambda: save_image(torch.zeros(1, 2, 2), tmp_path / name)):
        with pytest.raises(ValueError, match=hint) as info:
            action()
        assert name in str(info.value) and ".nii.gz" in str(info.value) and ".mha" in str(info.value)
    assert image_suffix("A.NII.GZ") == ".nii.gz"


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".png"])
def test_corrupt_file_is_wrapped_with_its_name(tmp_path: Path, suffix: str) -> None:
    good = tmp_path / f"good{suffix}"
    save_image(torch.ones(1, 8, 8, dtype=torch.uint8), good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2] if suffix != ".png" else b"garbage" * 20)
    with pytest.raises(OSError, match="corrupt") as info:
        load_image(bad)
    assert str(bad) in str(info.value) and "re-export" in str(info.value)
    assert suffix == ".nii.gz" or isinstance(info.value.__cause__, RuntimeError)  # NIfTI payloads are read by us


def test_nii_beside_nii_gz_is_refused(tmp_path: Path) -> None:
    save_image(torch.zeros(1, 2, 3, 4), tmp_path / "case.nii")
    save_image(torch.ones(1, 2, 3, 4), tmp_path / "case.nii.gz")
    # The hazard itself: SimpleITK silently returns the .nii voxels for the .nii.gz.
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "case.nii.gz"))).max() == 0
    with pytest.raises(ValueError, match="Ambiguous NIfTI") as info:
        load_image(tmp_path / "case.nii.gz")
    message = str(info.value)
    assert str(tmp_path / "case.nii.gz") in message and str(tmp_path / "case.nii") in message
    assert "Delete or rename" in message
    assert load_image(tmp_path / "case.nii")[0].max() == 0  # the .nii itself reads right


def test_float_to_png_needs_an_explicit_conversion(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"to\(torch.uint8\)") as info:
        save_image(torch.rand(1, 4, 4), tmp_path / "x.png")
    assert str(tmp_path / "x.png") in str(info.value) and ".tif" in str(info.value)
    with pytest.raises(ValueError, match="2D"):
        save_image(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        save_image(torch.tensor([[[-1, 3]]]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8 only"):
        save_image(torch.tensor([[[0, 300]]]), tmp_path / "x.bmp")
    assert not list(tmp_path.iterdir())


def test_label_errors(tmp_path: Path) -> None:
    path = tmp_path / "soft.nii.gz"
    save_image(torch.tensor([[[0.0, 0.5]]]), path)
    with pytest.raises(ValueError, match="non-integer") as info:
        load_image(path, is_label=True)
    assert str(path) in str(info.value) and "is_label=False" in str(info.value)
    save_image(torch.tensor([[[0.0, 2.0]]]), path)
    assert load_image(path, is_label=True)[0].tolist() == [[[0, 2]]]
    rgb = tmp_path / "rgb.png"
    save_image(torch.zeros(3, 2, 2, dtype=torch.uint8), rgb)
    with pytest.raises(ValueError, match="one class id per voxel") as info:
        load_image(rgb, is_label=True)
    assert str(rgb) in str(info.value)


def test_shape_and_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tensor\[None\]"):
        save_image(torch.zeros(4, 4), tmp_path / "x.mha")
    with pytest.raises(ValueError, match="3D geometry"):
        save_image(torch.zeros(1, 4, 4), tmp_path / "x.mha", OBLIQUE)
    four = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.Image(4, 3, 2, sitk.sitkFloat32)] * 2), str(four))
    with pytest.raises(ValueError, match="CASE_0000") as info:
        load_image(four)
    assert str(four) in str(info.value)
    save_image(torch.zeros(1, 2, 3, 4), tmp_path / "x.mha")
    with pytest.raises(ValueError, match="without target_spacing"):
        load_image(tmp_path / "x.mha", interpolation="linear")
    with pytest.raises(ValueError, match="one spacing per tensor axis"):
        load_image(tmp_path / "x.mha", target_spacing=(1.0, 1.0))


@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_failed_write_keeps_the_previous_file(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"case{suffix}"
    save_image(torch.zeros(1, 2, 3, 4), path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_write(image: sitk.Image, name: str, *args: object) -> None:
        Path(name).write_bytes(b"partial")
        raise RuntimeError("sitk::ERROR: disk full")

    monkeypatch.setattr(io.sitk, "WriteImage", half_write)
    with pytest.raises(OSError, match="disk full") as info:
        save_image(torch.ones(1, 2, 3, 4), path)
    assert str(path) in str(info.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---- fast cache --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.int16, torch.float32])
def test_fast_save_round_trip_with_geometry_and_metadata(tmp_path: Path, dtype: torch.dtype) -> None:
    tensor = (torch.randn(2, 3, 4, 5) * 100).to(dtype)
    path = tmp_path / "cache" / "case.safetensors"
    fast_save(tensor, path, OBLIQUE, case_id="case_001", source="imagesTr/case_001_0000.nii.gz")
    loaded, geometry = fast_load(path)
    assert loaded.dtype == dtype and torch.equal(loaded, tensor) and geometry == OBLIQUE
    metadata = fast_metadata(path)
    assert metadata["case_id"] == "case_001" and json.loads(metadata["geometry"]) == OBLIQUE.to_dict()
    assert no_temporary_files(tmp_path)


def test_fast_save_without_geometry_and_bad_metadata(tmp_path: Path) -> None:
    fast_save(torch.arange(6).view(2, 3)[:, ::2], tmp_path / "x.safetensors")  # non-contiguous input
    tensor, geometry = fast_load(tmp_path / "x.safetensors", device=torch.device("cpu"))
    assert geometry is None and tensor.tolist() == [[0, 2], [3, 5]]
    with pytest.raises(TypeError, match="'epoch' must be a str"):
        fast_save(torch.zeros(1), tmp_path / "y.safetensors", epoch=3)  # type: ignore[arg-type]
    assert not (tmp_path / "y.safetensors").exists()


def test_fast_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        fast_load(tmp_path / "absent.safetensors")
    path = tmp_path / "case.safetensors"
    fast_save(torch.zeros(64, 64), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(OSError, match="delete it") as info:
        fast_load(path)
    assert str(path) in str(info.value)
    from safetensors.torch import save_file

    save_file({"weights": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not written by fast_save"):
        fast_load(tmp_path / "other.safetensors")


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    for suffix in (*MEDICAL, ".png", ".tif"):
        save_image(torch.zeros(1, 3, 3, dtype=torch.uint8), tmp_path / f"x{suffix.replace('.', '_')}{suffix}")
    assert no_temporary_files(tmp_path) and len(os.listdir(tmp_path)) == len(MEDICAL) + 3  # + .raw
