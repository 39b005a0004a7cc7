"""Cheap checks that an image file holds the voxel data its header declares.

SimpleITK reads some damaged files without complaint: a truncated BMP comes back with zero rows, a truncated
TIFF stack with pages missing, and a DICOM series silently leaves out a slice it cannot parse. These checks
read headers only (a few hundred bytes per file, no voxels), so they add next to nothing to a read. MetaImage
and NRRD readers refuse truncated files themselves; :func:`metaimage_shortfall` explains such a refusal in bytes.
"""
from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

FIX = "re-export or re-download it"
# MetaImage element types and their sizes in bytes.
_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}
# TIFF field types holding offsets and byte counts: SHORT, LONG, LONG8 (BigTIFF).
_TIFF_INTS = {3: "H", 4: "I", 16: "Q"}
_STRIPS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, TileByteCounts)
_MAX_PAGES = 1 << 20


class CorruptImageError(OSError):
    """An image file that is empty, not of its format, or shorter than its header says; the message names it."""


def truncated(path: Path, what: str, expected: int, found: int) -> CorruptImageError:
    """The error for a file holding ``found`` of the ``expected`` bytes of ``what``."""
    return CorruptImageError(f"{path} is truncated or corrupt: expected {expected} bytes of {what}, found {found}; "
                             f"{FIX}")


def sitk_reason(err: RuntimeError) -> str:
    """The last line of a SimpleITK error, which states the cause without the C++ source location."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("sitk::ERROR: ") if lines else "unknown SimpleITK error"


def raise_if_not_finite(voxels: np.ndarray, path: Path) -> None:
    """A ValueError counting the NaN and infinite values of floating-point (or complex) ``voxels``, if any."""
    if voxels.dtype.kind not in "fc" or np.isfinite(voxels).all():
        return
    nan = int(np.count_nonzero(np.isnan(voxels)))
    infinite = int(np.count_nonzero(np.isinf(voxels)))
    raise ValueError(
        f"{path} holds {nan} NaN and {infinite} infinite voxel value(s) out of {voxels.size}; replace them with "
        f"finite values (e.g. the image minimum, or 0 outside the field of view) and save the file again"
    )


def check_bmp(path: Path) -> None:
    """Raise if the pixel rows a BMP header declares run past the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(54)
    if len(header) < 54 or header[:2] != b"BM":
        return  # SimpleITK read it, so it is another layout (OS/2 header); nothing to compare
    offset, = struct.unpack_from("<I", header, 10)
    width, height = struct.unpack_from("<ii", header, 18)
    bits, compression, image_size = struct.unpack_from("<HII", header, 28)
    if compression in (1, 2):  # run-length encoded: only the declared payload size is known
        expected = image_size
    else:
        expected = (bits * abs(width) + 31) // 32 * 4 * abs(height)
    if offset + expected > size:
        raise truncated(path, "pixel data", expected, max(size - offset, 0))


def check_tiff(path: Path) -> None:
    """Raise if a page's strips or tiles, or the next page's directory, lie past the end of a TIFF file.

    A TIFF stack stores one directory per page, each pointing at the next, so a cut file loses whole pages
    (which SimpleITK does not notice) or the tail of the last one.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            return
        endian = "<" if head[:2] == b"II" else ">"
        magic, = struct.unpack_from(endian + "H", head, 2)
        if magic == 43:  # BigTIFF: 8-byte offsets, counts and value fields
            offset_format, count_format, first = "Q", "Q", struct.unpack_from(endian + "Q", head, 8)[0]
        else:
            offset_format, count_format, first = "I", "H", struct.unpack_from(endian + "I", head, 4)[0]
        entry_size = 4 + 2 * struct.calcsize(offset_format)
        seen: set[int] = set()
        directory, page = first, 0
        while directory and directory not in seen and page < _MAX_PAGES:
            seen.add(directory)
            page += 1
            count_size = struct.calcsize(count_format)
            if directory + count_size > size:
                raise CorruptImageError(f"{path} is truncated: the directory of page {page} starts at byte "
                                        f"{directory} but the file holds {size} bytes; {FIX}")
            handle.seek(directory)
            entries, = struct.unpack(endian + count_format, handle.read(count_size))
            table = handle.read(entries * entry_size + struct.calcsize(offset_format))
            if len(table) < entries * entry_size + struct.calcsize(offset_format):
                raise CorruptImageError(f"{path} is truncated inside the directory of page {page}; {FIX}")
            fields = _tiff_fields(handle, table, entries, endian, offset_format)
            if fields is None:
                raise CorruptImageError(f"{path} is truncated: the strip table of page {page} lies past the end "
                                        f"of the file ({size} bytes); {FIX}")
            for offsets_tag, counts_tag in _STRIPS:
                if offsets_tag in fields and counts_tag in fields:
                    end = max((o + c for o, c in zip(fields[offsets_tag], fields[counts_tag], strict=False)),
                              default=0)
                    if end > size:
                        raise CorruptImageError(f"{path} is truncated: the pixel data of page {page} ends at byte "
                                                f"{end} but the file holds {size} bytes; {FIX}")
            directory, = struct.unpack_from(endian + offset_format, table, entries * entry_size)


def _tiff_fields(handle: BinaryIO, table: bytes, entries: int, endian: str, offset_format: str
                 ) -> dict[int, list[int]] | None:
    """The strip and tile offset/count fields of one TIFF directory (None if their values lie past the end)."""
    wanted = {tag for pair in _STRIPS for tag in pair}
    inline = struct.calcsize(offset_format)
    fields: dict[int, list[int]] = {}
    for k in range(entries):
        start = k * (4 + 2 * inline)
        tag, kind = struct.unpack_from(endian + "HH", table, start)
        if tag not in wanted or kind not in _TIFF_INTS:
            continue
        count, = struct.unpack_from(endian + offset_format, table, start + 4)
        value_format = endian + f"{count}{_TIFF_INTS[kind]}"
        length = struct.calcsize(value_format)
        if length <= inline:
            fields[tag] = list(struct.unpack_from(value_format, table, start + 4 + inline))
        else:
            where, = struct.unpack_from(endian + offset_format, table, start + 4 + inline)
            handle.seek(where)
            data = handle.read(length)
            if len(data) < length:
                return None
            fields[tag] = list(struct.unpack(value_format, data))
    return fields


def metaimage_shortfall(path: Path) -> str | None:
    """Why SimpleITK refused a MetaImage (.mha/.mhd): "expected N bytes of voxel data, found M", if that is why.

    SimpleITK's own message for a short file is a misleading "No such file or directory".
    """
    try:
        with open(path, "rb") as handle:
            header: dict[str, str] = {}
            while line := handle.readline(4096):
                key, _, value = line.decode("latin-1").partition("=")
                header[key.strip()] = value.strip()
                if key.strip() == "ElementDataFile":
                    break
            data_start = handle.tell()
    except OSError:
        return None
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        element = _MET_SIZES[header["ElementType"]] * int(header.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return None
    source = header.get("ElementDataFile", "")
    if source == "LOCAL":
        found = path.stat().st_size - data_start
    elif re.fullmatch(r"[^%*?]+", source) and (path.parent / source).is_file():
        found = (path.parent / source).stat().st_size
    else:
        return None
    compressed = header.get("CompressedData", "False").lower() == "true"
    if compressed:
        if "CompressedDataSize" not in header:
            return None
        expected, what = int(header["CompressedDataSize"]), "compressed voxel data"
    else:
        expected, what = math.prod(dims) * element, "voxel data"
    return f"expected {expected} bytes of {what}, found {found}" if found < expected else None


def unread_dicom_files(folder: Path, series_files: Iterable[str]) -> list[Path]:
    """Files of ``folder`` that look like DICOM (``DICM`` at byte 128) but are not among ``series_files``.

    GDCM drops a slice it cannot parse (truncated, corrupt) from the series without a word; this finds it.
    """
    used = {Path(f).resolve() for f in series_files}
    unread = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.resolve() in used:
            continue
        with open(path, "rb") as handle:
            handle.seek(128)
            if handle.read(4) == b"DICM":
                unread.append(path)
    return unread
