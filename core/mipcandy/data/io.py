"""Reading and writing images as channel-first tensors with their geometry (SimpleITK), and a fast tensor cache.

Tensors follow the data contracts: (C, H, W) or (C, D, H, W), images float32, labels int64. A file's own
dimension decides the tensor's: a 3D file of depth 1 stays 3D, so its geometry (slice thickness, position)
survives. Pixels with several components (RGB) become channels.

What each format keeps (measured with SimpleITK 2.5): .mha/.mhd exactly; .nrrd to float64 rounding (it stores
direction x spacing); .nii/.nii.gz to float32 (spacing, origin, quaternion); .png spacing only, .tif/.tiff
in-plane spacing only, .bmp nothing. :func:`save_image` warns with :class:`GeometryDroppedWarning` when a
natural-image format drops geometry it was given.

Reads are checked: a file that is empty, not of its format, or shorter than its header declares raises
:class:`~mipcandy.data.integrity.CorruptImageError` (NIfTI voxels are decoded by :mod:`mipcandy.data.nifti`,
since SimpleITK zero-fills truncated NIfTI files and zeroes their NaN), and NaN or infinite voxels in any
format raise ValueError; both name the file.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import Tensor

from mipcandy.atomic import atomic_path
from mipcandy.data.geometry import Geometry
from mipcandy.data.integrity import (
    FIX,
    CorruptImageError,
    check_bmp,
    check_tiff,
    metaimage_shortfall,
    raise_if_not_finite,
    sitk_reason,
    unread_dicom_files,
)
from mipcandy.data.nifti import read_nifti
from mipcandy.data.resample import Mode, resample

PathLike = str | os.PathLike[str]
Device = str | torch.device

SUPPORTED_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".bmp", ".tif", ".tiff")
NATURAL_SUFFIXES: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff")
# Integer types natural-image writers accept (TIFF also takes signed and float data).
_NATURAL_INTEGERS: dict[str, tuple[type[np.integer], ...]] = {".png": (np.uint8, np.uint16), ".bmp": (np.uint8,)}
_NARROW_INTEGERS: tuple[type[np.integer], ...] = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)
_PAYLOAD = "payload"
_GEOMETRY_KEY = "geometry"
_SUPPORTED_TEXT = ", ".join(SUPPORTED_SUFFIXES) + " or a folder holding one DICOM series"


class GeometryDroppedWarning(UserWarning):
    """A file format could not store (part of) the geometry an image was saved with."""


def image_suffix(path: PathLike) -> str:
    """The supported suffix ``path`` ends with (lower case), or a ValueError that lists the supported ones."""
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    hint = ""
    if name.endswith(".dcm"):
        hint = " For DICOM, pass the folder that holds the series' slices."
    elif name.endswith((".jpg", ".jpeg")):
        hint = " JPEG is lossy and would corrupt label maps; convert to .png."
    raise ValueError(f"Unsupported image file {path}: supported are {_SUPPORTED_TEXT}.{hint}")


def load_image(
    path: PathLike,
    *,
    is_label: bool = False,
    target_spacing: Sequence[float] | None = None,
    interpolation: Mode | None = None,
    device: Device = "cpu",
) -> tuple[Tensor, Geometry]:
    """Read an image file or DICOM series folder as a channel-first tensor and its :class:`Geometry`.

    With ``target_spacing`` (tensor axis order) the tensor is resampled on ``device`` (see
    :mod:`mipcandy.data.resample`; ``interpolation`` defaults to "cubic" for images and "onehot" for labels)
    and the geometry becomes that of the resampled grid: same extent, spacing equal to ``target_spacing`` up to
    the rounding of the shape.
    """
    path = Path(path)
    voxels = _read_dicom_series(path) if path.is_dir() else _read_file(path)
    geometry = voxels.geometry
    tensor = _to_tensor(voxels, path, is_label).to(device)
    if target_spacing is None:
        if interpolation is not None:
            raise ValueError(f"interpolation={interpolation!r} given without target_spacing while loading {path}")
        return tensor, geometry
    if len(target_spacing) != geometry.ndim:
        raise ValueError(
            f"target_spacing {tuple(target_spacing)} has {len(target_spacing)} values but {path} is "
            f"{geometry.ndim}D; give one spacing per tensor axis ((z, y, x) for 3D)"
        )
    resampled = resample(tensor, geometry.spacing, target_spacing, is_label=is_label, mode=interpolation)
    return resampled, geometry.resized(tensor.shape[1:], resampled.shape[1:])


@dataclass(frozen=True)
class _Voxels:
    """Voxels in SimpleITK's array order ((z, y, x), components last when several) and their geometry.

    ``image`` keeps the SimpleITK image alive while ``array`` views its buffer.
    """

    array: np.ndarray
    ndim: int
    components: int
    geometry: Geometry
    image: sitk.Image | None = None

    @classmethod
    def of(cls, image: sitk.Image) -> _Voxels:
        """A view of a SimpleITK image's voxels."""
        return cls(sitk.GetArrayViewFromImage(image), image.GetDimension(), image.GetNumberOfComponentsPerPixel(),
                   Geometry.from_sitk(image), image)


def _read_file(path: Path) -> _Voxels:
    """Read a file, checking that it holds the data its header declares (see :mod:`mipcandy.data.integrity`)."""
    if not path.exists():
        raise FileNotFoundError(f"Image file not found: {path}. Check the path and the file ending.")
    suffix = image_suffix(path)
    if suffix == ".nii.gz":
        plain = path.with_name(path.name[: -len(".gz")])
        if plain.exists():
            # SimpleITK would take the header from the .nii.gz and silently read the voxels of the .nii.
            raise ValueError(
                f"Ambiguous NIfTI: {path} and {plain} share a base name, and SimpleITK reads the voxels of the .nii "
                f"when asked for the .nii.gz. Delete or rename one of the two files."
            )
    if suffix in (".nii", ".nii.gz"):
        array, header = read_nifti(path)
        if array is not None:
            geometry = Geometry(tuple(reversed(header.GetSpacing())), header.GetOrigin(), header.GetDirection())
            return _Voxels(array, header.GetDimension(), 1, geometry)
    elif path.stat().st_size == 0:
        raise CorruptImageError(f"{path} is empty (0 bytes); {FIX}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        shortfall = metaimage_shortfall(path) if suffix in (".mha", ".mhd") else None
        reason = f"it is truncated: {shortfall}" if shortfall else sitk_reason(err)
        raise CorruptImageError(
            f"Cannot read {path}: {reason}. The file is corrupt, truncated or not really a {suffix} file; {FIX}."
        ) from err
    if suffix == ".bmp":
        check_bmp(path)
        if image.GetNumberOfComponentsPerPixel() > 1 and _bmp_is_grayscale(path):
            # ITK expands a palette BMP to RGB even when the palette is grey (how grey BMPs are stored).
            image = sitk.VectorIndexSelectionCast(image, 0)
    elif suffix in (".tif", ".tiff"):
        check_tiff(path)
    return _Voxels.of(image)


def _read_dicom_series(folder: Path) -> _Voxels:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ValueError(
            f"No DICOM series found in folder {folder}. Pass a folder that holds the slices of one DICOM series, "
            f"or an image file ({', '.join(SUPPORTED_SUFFIXES)})."
        )
    if len(series) > 1:
        raise ValueError(
            f"Folder {folder} holds {len(series)} DICOM series ({', '.join(series)}); move each series into its "
            f"own folder and load that folder."
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    unread = unread_dicom_files(folder, files)
    if unread:
        names = ", ".join(p.name for p in unread[:10]) + (f" and {len(unread) - 10} more" if len(unread) > 10 else "")
        raise CorruptImageError(
            f"DICOM series {series[0]} in {folder}: {len(unread)} DICOM file(s) could not be read as part of it "
            f"({names}), so their slices would be missing; they are truncated or corrupt: {FIX}."
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return _Voxels.of(reader.Execute())
    except RuntimeError as err:
        raise CorruptImageError(
            f"Cannot read DICOM series {series[0]} in {folder}: {sitk_reason(err)}. Check that no slice is "
            f"corrupt or missing."
        ) from err


def _bmp_is_grayscale(path: Path) -> bool:
    """Whether a BMP is palette-based (<= 8 bits per pixel) with grey palette entries, as Pillow decides it."""
    with open(path, "rb") as handle:
        header = handle.read(54)
        if len(header) < 54 or header[:2] != b"BM":
            return False
        info_size, = struct.unpack_from("<I", header, 14)
        bits, = struct.unpack_from("<H", header, 28)
        used, = struct.unpack_from("<I", header, 46)
        if bits > 8:
            return False
        handle.seek(14 + info_size)
        palette = handle.read(4 * (used or 2**bits))
    entries = np.frombuffer(palette[: len(palette) // 4 * 4], dtype=np.uint8).reshape(-1, 4)
    return len(entries) > 0 and bool(np.all(entries[:, :3] == entries[:, :1]))


def _to_tensor(voxels: _Voxels, path: Path, is_label: bool) -> Tensor:
    if voxels.ndim not in (2, 3):
        raise ValueError(
            f"{path} is a {voxels.ndim}D image; only 2D and 3D images are supported. Split it into one 3D file per "
            f"channel (nnU-Net's CASE_0000, CASE_0001, ... naming)."
        )
    array = voxels.array
    raise_if_not_finite(array, path)
    if voxels.components == 1:
        array = array[None]
    elif is_label:
        raise ValueError(
            f"Label {path} has {voxels.components} components per pixel (RGB?); a label map holds one class id per "
            f"voxel. Convert it to a single-channel integer image."
        )
    else:
        array = np.moveaxis(array, -1, 0)
    if is_label and array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise ValueError(
            f"Label {path} holds non-integer values; a label map holds integer class ids. If it is an image, load "
            f"it with is_label=False; otherwise round it and save it with an integer pixel type."
        )
    # np.array copies: a view dies with its SimpleITK image, and NIfTI voxels view the read-only file bytes.
    return torch.from_numpy(np.array(array, dtype=np.int64 if is_label else np.float32))


def save_image(tensor: Tensor, path: PathLike, geometry: Geometry | None = None) -> None:
    """Write a channel-first tensor ((C, H, W) or (C, D, H, W)) atomically, with ``geometry`` copied exactly.

    Several channels are written as a multi-component (e.g. RGB) pixel. Integer data is stored in the smallest
    integer type that holds its range (so labels go to PNG as uint8/uint16, the nnU-Net 2D convention), bool
    as uint8, half precision as float32. PNG and BMP take only unsigned integers: convert floats explicitly.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if tensor.ndim not in (3, 4):
        raise ValueError(
            f"Cannot save a tensor of shape {tuple(tensor.shape)} to {path}: expected channel-first (C, H, W) or "
            f"(C, D, H, W); add the channel axis with tensor[None]."
        )
    if geometry is not None and geometry.ndim != tensor.ndim - 1:
        raise ValueError(f"Cannot save {tensor.ndim - 1}D data to {path} with a {geometry.ndim}D geometry")
    array = _to_numpy(tensor, path, suffix)
    if len(array) == 1:
        image = sitk.GetImageFromArray(array[0])
    else:
        image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)
    if geometry is not None:
        geometry.apply_to(image)
    try:
        if suffix == ".mhd":
            _write_with_sidecar(image, path)
        else:
            with atomic_path(path) as tmp:
                sitk.WriteImage(image, str(tmp))
                if geometry is not None and suffix in NATURAL_SUFFIXES:
                    _warn_dropped_geometry(geometry, tmp, path)
    except RuntimeError as err:
        raise OSError(f"Cannot write {path}: {sitk_reason(err)}") from err


def _to_numpy(tensor: Tensor, path: Path, suffix: str) -> np.ndarray:
    data = tensor.detach().cpu()
    if data.dtype == torch.bool:
        data = data.to(torch.uint8)
    elif data.is_floating_point() and data.dtype != torch.float64:
        data = data.to(torch.float32)
    array = data.numpy()
    if suffix in _NATURAL_INTEGERS and (tensor.ndim != 3 or array.dtype.kind not in "ui"):
        kind = "3D data" if tensor.ndim != 3 else f"{tensor.dtype} data"
        raise ValueError(
            f"Cannot save {kind} as {path}: {suffix[1:].upper()} holds 2D unsigned-integer images only. Convert it "
            f"explicitly (label maps: tensor.to(torch.uint8); intensities: (x * 255).round().clamp(0, 255)"
            f".to(torch.uint8)) or save as .tif, .nii.gz or .mha to keep the values."
        )
    if array.dtype.kind in "ui":
        allowed = _NATURAL_INTEGERS.get(suffix, _NARROW_INTEGERS)
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        fitting = [t for t in allowed if np.iinfo(t).min <= low and high <= np.iinfo(t).max]
        if fitting:
            array = array.astype(fitting[0], copy=False)
        elif suffix in _NATURAL_INTEGERS:
            raise ValueError(
                f"Cannot save values in [{low}, {high}] as {path}: {suffix[1:].upper()} holds "
                f"{' or '.join(np.dtype(t).name for t in allowed)} only. Save as .tif, .nii.gz or .mha instead."
            )
    return array


def _warn_dropped_geometry(geometry: Geometry, written: Path, path: Path) -> None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(written))
    reader.ReadImageInformation()
    stored = Geometry(tuple(reversed(reader.GetSpacing())), reader.GetOrigin(), reader.GetDirection())
    dropped = [
        name
        for name in ("spacing", "origin", "direction")
        if not all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
            for a, b in zip(getattr(geometry, name), getattr(stored, name), strict=True)
        )
    ]
    if dropped:
        warnings.warn(
            f"{path}: the {image_suffix(path)} format does not store the image's {', '.join(dropped)}; it was "
            f"dropped. Save as .nii.gz, .mha or .nrrd to keep the geometry.",
            GeometryDroppedWarning,
            stacklevel=3,
        )


def _write_with_sidecar(image: sitk.Image, path: Path) -> None:
    """Atomic write of a header + data pair (.mhd + .raw): data files land first, the header last.

    The header names its data file after itself, so writing to a temporary name (``atomic_path``) would leave
    a header pointing at a temporary file; instead the pair is written under its final names in a private
    folder beside the target and moved in.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        header = staging / path.name
        sitk.WriteImage(image, str(header))
        for written in sorted(staging.iterdir(), key=lambda p: p == header):
            with open(written, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fast_save(tensor: Tensor, path: PathLike, geometry: Geometry | None = None, **extra_metadata: str) -> None:
    """Write a tensor to a safetensors file atomically, with its geometry (JSON) and string metadata.

    About 10-50x faster to read than NIfTI; meant for caches and dumps, not for exchange.
    """
    from safetensors.torch import save_file

    for key, value in extra_metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"fast_save metadata {key!r} must be a str (safetensors stores text), got {type(value)}")
    metadata = dict(extra_metadata)
    if geometry is not None:
        metadata[_GEOMETRY_KEY] = json.dumps(geometry.to_dict())
    with atomic_path(path) as tmp:
        save_file({_PAYLOAD: tensor.detach().cpu().contiguous()}, str(tmp), metadata=metadata or None)


def fast_load(path: PathLike, *, device: Device = "cpu") -> tuple[Tensor, Geometry | None]:
    """Read a :func:`fast_save` file onto ``device``; the geometry is None if none was saved."""
    with _open_fast(Path(path), device) as handle:
        tensor = handle.get_tensor(_PAYLOAD)
        metadata = handle.metadata() or {}
    return tensor, Geometry.from_dict(json.loads(metadata[_GEOMETRY_KEY])) if _GEOMETRY_KEY in metadata else None


def fast_metadata(path: PathLike) -> dict[str, str]:
    """The string metadata of a :func:`fast_save` file (the geometry under "geometry"), without reading the data."""
    with _open_fast(Path(path), "cpu") as handle:
        return dict(handle.metadata() or {})


@contextmanager
def _open_fast(path: Path, device: Device) -> Iterator[Any]:
    """Open a fast_save file, turning safetensors' errors into ones that name the file and the fix."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"Tensor file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            if _PAYLOAD not in handle.keys():
                raise ValueError(f"{path} was not written by fast_save (no {_PAYLOAD!r} tensor); write it again.")
            yield handle
    except SafetensorError as err:
        raise OSError(
            f"Cannot read {path}: {err}. It is not a valid safetensors file (truncated write or another format); "
            f"delete it and write it again (caches rebuild it)."
        ) from err
