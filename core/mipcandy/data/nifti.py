"""NIfTI voxels read by us, so that truncated files and NaN/Inf voxels are seen (SimpleITK hides both).

SimpleITK's NIfTI reader (nifticlib) fills the voxels missing from a truncated file with zeros and replaces
NaN and infinity by 0. Here the file is decompressed once, its size is checked against what the header
declares (``vox_offset`` + voxel count x bytes per voxel, either byte order), and the
raw voxels are returned in SimpleITK's array order. Geometry, dimension and pixel type still come from
SimpleITK's header reader, so orientation rules stay SimpleITK's; files it would convert (scaled by
``scl_slope``, RGB, complex, vector) are left to SimpleITK once their size and finiteness are checked.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mipcandy.data.integrity import FIX, CorruptImageError, raise_if_not_finite, sitk_reason, truncated

# NIfTI datatype code -> (numpy type of one voxel, SimpleITK pixel type when read as is, None: SimpleITK converts).
_TYPES: dict[int, tuple[str, int | None]] = {
    2: ("u1", sitk.sitkUInt8), 4: ("i2", sitk.sitkInt16), 8: ("i4", sitk.sitkInt32), 16: ("f4", sitk.sitkFloat32),
    64: ("f8", sitk.sitkFloat64), 256: ("i1", sitk.sitkInt8), 512: ("u2", sitk.sitkUInt16),
    768: ("u4", sitk.sitkUInt32), 1024: ("i8", sitk.sitkInt64), 1280: ("u8", sitk.sitkUInt64),
    32: ("c8", None), 1792: ("c16", None), 128: ("3u1", None), 2304: ("4u1", None),
}
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_SIZE = 348


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1 header that locate and size the voxel data."""

    datatype: int
    dtype: np.dtype
    shape: tuple[int, ...]  # dim[1..dim[0]], NIfTI (x fastest) order
    offset: int
    slope: float
    intercept: float

    @property
    def data_bytes(self) -> int:
        """Bytes of voxel data the header declares."""
        return math.prod(self.shape) * self.dtype.itemsize


def parse_header(data: bytes, path: Path) -> NiftiHeader | None:
    """The header at the start of decompressed ``data``; None for a datatype this module does not size."""
    if len(data) < 4:
        raise CorruptImageError(f"{path} is not a NIfTI file: it holds {len(data)} bytes; {FIX}")
    for endian in "<>":
        sizeof_hdr, = struct.unpack_from(endian + "i", data)
        if sizeof_hdr == 540:
            raise CorruptImageError(f"{path} is a NIfTI-2 file, which SimpleITK cannot read; convert it to NIfTI-1 "
                                    "(e.g. with nibabel) or to .mha")
        if sizeof_hdr == _HEADER_SIZE:
            break
    else:
        raise CorruptImageError(f"{path} is not a NIfTI file (no NIfTI-1 header at its start); {FIX}")
    if len(data) < _HEADER_SIZE:
        raise truncated(path, "header", _HEADER_SIZE, len(data))
    dims = struct.unpack_from(endian + "8h", data, 40)
    datatype, = struct.unpack_from(endian + "h", data, 70)
    vox_offset, slope, intercept = struct.unpack_from(endian + "3f", data, 108)
    if not 1 <= dims[0] <= 7 or any(d < 0 for d in dims[1 : dims[0] + 1]):
        raise CorruptImageError(f"{path} has a corrupt NIfTI header (dim = {list(dims)}); {FIX}")
    if datatype not in _TYPES:
        return None
    shape = tuple(max(d, 1) for d in dims[1 : dims[0] + 1])
    return NiftiHeader(datatype, np.dtype(endian + _TYPES[datatype][0]), shape, max(int(vox_offset), _HEADER_SIZE),
                       float(slope), float(intercept))


def read_nifti(path: Path) -> tuple[np.ndarray | None, sitk.ImageFileReader]:
    """The voxels of a NIfTI file in SimpleITK's array order, and SimpleITK's reader of its header information.

    The voxels are None where SimpleITK must convert them itself (see the module docstring); the file has been
    checked then too. Raises :class:`CorruptImageError` for an empty, non-NIfTI or truncated file and
    ValueError for NaN or infinite voxels.
    """
    header, data = _read(path)
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")  # spares probing every format
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise CorruptImageError(f"{path} has a NIfTI header SimpleITK cannot read ({sitk_reason(err)}); {FIX}") \
            from err
    if header is None:
        return None, reader
    count = math.prod(header.shape) * header.dtype.itemsize // header.dtype.base.itemsize
    voxels = np.frombuffer(data, dtype=header.dtype.base, count=count, offset=header.offset)
    as_is = _TYPES[header.datatype][1]
    if (as_is is None or as_is != reader.GetPixelID() or reader.GetNumberOfComponents() != 1
            or header.slope not in (0.0, 1.0) or header.intercept != 0.0
            or math.prod(reader.GetSize()) != voxels.size):
        raise_if_not_finite(voxels, path)  # SimpleITK would zero them
        return None, reader
    return voxels.reshape(tuple(reversed(reader.GetSize()))), reader


def _read(path: Path) -> tuple[NiftiHeader | None, bytes]:
    """The header and the whole (decompressed) file, checked to hold every voxel the header declares.

    Like nifticlib, a ``.nii.gz`` that is not compressed is read as it is.
    """
    raw = path.read_bytes()
    if not raw:
        raise CorruptImageError(f"{path} is empty (0 bytes); {FIX}")
    compressed = raw.startswith(_GZIP_MAGIC)
    if compressed:
        try:
            head = zlib.decompressobj(wbits=31).decompress(raw, _HEADER_SIZE)
        except zlib.error as err:
            raise CorruptImageError(f"{path} is corrupt: its gzip data cannot be decompressed ({err}); {FIX}") \
                from err
    header = parse_header(head if compressed else raw, path)
    expected = None if header is None else header.offset + header.data_bytes
    data, complete = _inflate(raw, path, expected) if compressed else (raw, True)
    if header is not None and len(data) < header.offset + header.data_bytes:
        raise truncated(path, "voxel data", header.data_bytes, max(len(data) - header.offset, 0))
    if not complete:
        raise CorruptImageError(f"{path} is truncated: its gzip stream ends before its end marker; {FIX}")
    return header, data


def _inflate(raw: bytes, path: Path, expected: int | None) -> tuple[bytes, bool]:
    """Decompressed gzip data and whether the stream was complete.

    The usual single-member file is inflated in one call into a buffer of the expected size (deflate expands at
    most 1032-fold, which bounds it against a corrupt header); anything else (several members, a cut stream) is
    walked member by member, keeping what could be inflated.
    """
    if expected is not None:
        try:
            data = zlib.decompress(raw, wbits=31, bufsize=max(min(expected, 1032 * len(raw)), 1))
        except zlib.error:
            pass
        else:
            if len(data) >= expected:
                return data, True
    parts, rest = [], raw
    while rest:
        stream = zlib.decompressobj(wbits=31)
        try:
            parts.append(stream.decompress(rest))
        except zlib.error as err:
            raise CorruptImageError(f"{path} is corrupt: its gzip data cannot be decompressed ({err}); {FIX}") \
                from err
        if not stream.eof:
            return b"".join(parts), False
        rest = stream.unused_data.lstrip(b"\0")
    return b"".join(parts), True
