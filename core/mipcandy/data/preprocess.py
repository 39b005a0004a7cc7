"""A preprocessed-case cache: one safetensors file per case plus a JSON manifest, so training never decodes
NIfTI (or resamples) again, and patches are read without loading whole volumes.

Layout of ``cache_dir``: ``cases/<case id>.safetensors`` (tensors ``image`` float32 and ``label`` uint8/int16/
int32; metadata ``key`` and ``properties``), ``manifest.json`` (plan, cases and their keys) and
``fingerprint.json`` (the inspection the plan came from, reused while no source file changes).

Freshness: a case's key is the SHA-256 of the plan key (every setting, the CT statistics and
:data:`~mipcandy.data.preprocessing_plan.PREPROCESSING_VERSION`) and the identity of its sources. For file-backed
datasets the identity is each source file's name, size and ``st_mtime_ns`` (cheap: no decoding; a rewrite that keeps
size and nanosecond mtime would go unnoticed, which editors and copies do not produce). Other datasets (in memory,
binarized views) are identified by a SHA-256 of the image, label and geometry, which costs one load per case. A
case is reused only when its file's stored key equals the expected key, so a changed setting or source file is
rebuilt, never silently reused; an interrupted build keeps every case already written. All writes are atomic.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor

from mipcandy.atomic import atomic_path, atomic_write_text
from mipcandy.data import preprocessing_plan
from mipcandy.data.cropping import BBox, bbox_slices
from mipcandy.data.dataset import DatasetDescription, Device, SupervisedDataset
from mipcandy.data.geometry import Geometry
from mipcandy.data.inspection import InspectionAnnotations, inspect, load_inspection_annotations
from mipcandy.data.preprocessing_plan import CaseProperties, PreprocessingPlan, preprocess_case

CACHE_FORMAT = "mipcandy.preprocessed"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
FINGERPRINT = "fingerprint.json"
CASES = "cases"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def case_file_name(case_id: str) -> str:
    """File name of a case in the cache (a hash when the id is not a safe file name)."""
    stem = case_id if _SAFE_NAME.match(case_id) else hashlib.sha1(case_id.encode("utf-8")).hexdigest()
    return f"{stem}.safetensors"


def file_identity(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Name, size and modification time (ns) of each file: changes whenever a file is rewritten or touched."""
    out = []
    for path in paths:
        stat = Path(path).stat()
        out.append({"name": Path(path).name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


def _file_sources(dataset: Any, case_id: str) -> list[dict[str, Any]] | None:
    """Identity of a case's source files, or None when the dataset is not read from files."""
    reader = getattr(dataset, "reader", None)
    if not (hasattr(reader, "image_files") and hasattr(reader, "label_file")):
        return None
    return file_identity([*reader.image_files(case_id), reader.label_file(case_id)])


def case_file_digests(dataset: Any) -> dict[str, str] | None:
    """Per case, a digest of its files' names, sizes and modification times; None when not read from files.

    Cheap (file metadata only): a resumed run compares it with what it recorded to name the cases that changed.
    """
    sources = {case_id: _file_sources(dataset, case_id) for case_id in dataset.case_ids}
    if any(files is None for files in sources.values()):
        return None
    return {case_id: _digest(files) for case_id, files in sources.items()}


def content_identity(image: Tensor, label: Tensor, geometry: Geometry) -> str:
    """SHA-256 of a case's voxels, dtypes, shapes and geometry."""
    digest = hashlib.sha256()
    for tensor in (image, label):
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(geometry.to_dict()).encode())
    return digest.hexdigest()


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def _label_dtype(label: Tensor) -> torch.dtype:
    top = int(label.max()) if label.numel() else 0
    return torch.uint8 if top < 256 else torch.int16 if top < 32768 else torch.int32


def write_case(path: Path, image: Tensor, label: Tensor, properties: CaseProperties, key: str) -> None:
    """Write one preprocessed case atomically (image float32, label in the narrowest integer type)."""
    from safetensors.torch import save_file

    tensors = {"image": image.detach().cpu().float().contiguous(),
               "label": label.detach().cpu().to(_label_dtype(label)).contiguous()}
    metadata = {"format": CACHE_FORMAT, "key": key, "properties": json.dumps(properties.to_dict())}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _stored_key(path: Path) -> str | None:
    """The key a cached case was written with, or None when the file is missing or unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("key")
    except Exception:  # a truncated or foreign file is simply stale
        return None


@dataclass(frozen=True)
class CacheBuild:
    """What :func:`build_cache` did: which cases it (re)built, reused and removed."""

    cache_dir: Path
    plan: PreprocessingPlan
    rebuilt: tuple[str, ...]
    reused: tuple[str, ...]
    removed: tuple[str, ...]


def _fingerprint(
    dataset: Any, cache_dir: Path, sources: Mapping[str, Any], console: Console | None, progress: bool
) -> InspectionAnnotations:
    """The dataset's inspection: reused from ``fingerprint.json`` while every source file is unchanged."""
    path = cache_dir / FINGERPRINT
    files_only = all(v is not None for v in sources.values())
    key = _digest({"sources": sources, "version": preprocessing_plan.PREPROCESSING_VERSION}) if files_only else None
    if key is not None and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                return load_inspection_annotations(path, dataset)
        except (ValueError, OSError):
            pass  # unreadable: inspect again
    annotations = inspect(dataset, max_samples_per_class=0, progress=progress, console=console)
    if key is not None:
        atomic_write_text(path, json.dumps({**annotations.to_dict(), "key": key}, separators=(",", ":")) + "\n")
    return annotations


def build_cache(
    dataset: SupervisedDataset,
    cache_dir: str | os.PathLike[str],
    *,
    plan: PreprocessingPlan | None = None,
    annotations: InspectionAnnotations | None = None,
    compute_device: Device = "cpu",
    progress: bool = True,
    console: Console | None = None,
    **plan_options: Any,
) -> CacheBuild:
    """Preprocess every case of ``dataset`` into ``cache_dir``, rebuilding only stale cases.

    Without ``plan``, it is made by :meth:`PreprocessingPlan.from_annotations` from ``annotations`` (default: the
    dataset's inspection, cached in ``fingerprint.json``) with ``plan_options`` (e.g. ``target_spacing=...``,
    ``normalization=[...]``, ``crop=False``, ``resample_cases=False``). ``compute_device`` runs the preprocessing
    (resampling mostly) there, e.g. on a GPU.
    """
    cache_dir = Path(cache_dir)
    (cache_dir / CASES).mkdir(parents=True, exist_ok=True)
    case_ids = list(dataset.case_ids)
    sources: dict[str, Any] = {c: _file_sources(dataset, c) for c in case_ids}
    if plan is None:
        annotations = annotations or _fingerprint(dataset, cache_dir, sources, console, progress)
        plan = PreprocessingPlan.from_annotations(annotations, **plan_options)
    elif plan_options or annotations is not None:
        raise ValueError("Pass either a plan or annotations/plan options, not both")
    plan_key = plan.key()
    entries: dict[str, dict[str, Any]] = {}
    rebuilt: list[str] = []
    reused: list[str] = []
    with Progress(console=console, transient=True, disable=not progress) as bar:
        for i in bar.track(range(len(case_ids)), description=f"Preprocessing {len(case_ids)} cases"):
            case_id = case_ids[i]
            path = cache_dir / CASES / case_file_name(case_id)
            loaded = None
            if sources[case_id] is None:
                loaded = (dataset.image(i).cpu(), dataset.label(i).cpu(), dataset.geometry(i))
                sources[case_id] = content_identity(*loaded)
            key = _digest({"plan": plan_key, "case_id": case_id, "sources": sources[case_id]})
            if _stored_key(path) == key:
                reused.append(case_id)
            else:
                image, label, geometry = loaded or (dataset.image(i), dataset.label(i), dataset.geometry(i))
                image, label, properties = preprocess_case(image.to(compute_device), label.to(compute_device),
                                                           geometry, plan, case_id=case_id)
                write_case(path, image, label, properties, key)
                rebuilt.append(case_id)
            entries[case_id] = {"file": f"{CASES}/{path.name}", "key": key}
    removed = _remove_orphans(cache_dir, {e["file"] for e in entries.values()})
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "plan": plan.to_dict(),
        "plan_key": plan_key,
        "channel_names": list(annotations.channel_names) if annotations is not None else None,
        "labels": annotations.labels if annotations is not None else getattr(dataset, "labels", None),
        "cases": entries,
    }
    atomic_write_text(cache_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return CacheBuild(cache_dir, plan, tuple(rebuilt), tuple(reused), removed)


def _remove_orphans(cache_dir: Path, keep: set[str]) -> tuple[str, ...]:
    """Delete case files that no longer belong to the dataset."""
    removed = []
    for path in sorted((cache_dir / CASES).glob("*.safetensors")):
        if f"{CASES}/{path.name}" not in keep:
            path.unlink()
            removed.append(path.name)
    return tuple(removed)


class CacheReader:
    """Reads cases of a cache written by :func:`build_cache`; patches are sliced straight from the files."""

    def __init__(self, cache_dir: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self._dir = cache_dir
        self._files = {case_id: cache_dir / entry["file"] for case_id, entry in entries.items()}
        self._properties: dict[str, CaseProperties] = {}

    def _open(self, case_id: str) -> Any:
        from safetensors import safe_open

        path = self._files.get(case_id)
        if path is None:
            raise KeyError(f"Case {case_id!r} is not in the cache at {self._dir}")
        if not path.is_file():
            raise FileNotFoundError(f"Cached case {case_id!r} is missing ({path}); rebuild the cache with "
                                    "preprocess_dataset()")
        return safe_open(str(path), framework="pt")

    def properties(self, case_id: str) -> CaseProperties:
        """How the case was preprocessed (read from the file's metadata once)."""
        if case_id not in self._properties:
            with self._open(case_id) as handle:
                self._properties[case_id] = CaseProperties.from_dict(json.loads(handle.metadata()["properties"]))
        return self._properties[case_id]

    def read_image(self, case_id: str) -> Tensor:
        """The preprocessed (C, *spatial) float32 image."""
        with self._open(case_id) as handle:
            return handle.get_tensor("image")

    def read_label(self, case_id: str) -> Tensor:
        """The preprocessed (1, *spatial) label as int64."""
        with self._open(case_id) as handle:
            return handle.get_tensor("label").long()

    def read_geometry(self, case_id: str) -> Geometry:
        """Geometry of the preprocessed tensors."""
        return self.properties(case_id).preprocessed_geometry()

    def read_region(self, case_id: str, bbox: BBox) -> tuple[Tensor, Tensor]:
        """Image and label inside ``bbox``, reading only those bytes of the file.

        The label keeps its stored integer dtype (the narrowest that holds the classes): patch samplers copy it
        into their batch buffer anyway, and widening it here would allocate eight times the bytes.
        """
        index = (slice(None), *bbox_slices(bbox))
        with self._open(case_id) as handle:
            return handle.get_slice("image")[index], handle.get_slice("label")[index]

    def spatial_shape(self, case_id: str) -> tuple[int, ...]:
        """Spatial shape of the preprocessed case, from the file header."""
        with self._open(case_id) as handle:
            return tuple(handle.get_slice("image").get_shape()[1:])


class PreprocessedDataset(SupervisedDataset):
    """The cases of a preprocessing cache as a :class:`SupervisedDataset` (items ``(image, label)``)."""

    def __init__(self, cache_dir: str | os.PathLike[str], *, device: Device = "cpu") -> None:
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"No preprocessing cache at {self.cache_dir} ({MANIFEST} is missing); build it "
                                    "with preprocess_dataset()") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); rebuild the cache with preprocess_dataset()") from err
        if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
            raise ValueError(f"{path} is not a {CACHE_FORMAT} version {CACHE_VERSION} manifest; rebuild the cache "
                             "with preprocess_dataset()")
        self.plan = PreprocessingPlan.from_dict(manifest["plan"])
        names = manifest.get("channel_names")
        self.channel_names: dict[int, str] | None = None if names is None else dict(enumerate(names))
        self.labels: dict[str, int] | None = manifest.get("labels")
        super().__init__(CacheReader(self.cache_dir, manifest["cases"]), manifest["cases"], device=device)

    def describe(self) -> DatasetDescription:
        """Class and channel names, the cache folder and the plan its cases were preprocessed with."""
        return DatasetDescription(name=self.cache_dir.name, labels=self.labels, channel_names=self.channel_names,
                                  cache=str(self.cache_dir), plan=self.plan)

    @property
    def reader(self) -> CacheReader:
        """The cache reader."""
        return self._reader  # type: ignore[return-value]

    def properties(self, i: int) -> CaseProperties:
        """How case ``i`` was preprocessed (original grid, crop box, shapes), to restore predictions."""
        return self.reader.properties(self.case_id(i))

    def spatial_shape(self, i: int) -> tuple[int, ...]:
        """Spatial shape of case ``i`` without reading its voxels."""
        return self.reader.spatial_shape(self.case_id(i))

    def read_region(self, i: int, bbox: BBox) -> tuple[Tensor, Tensor]:
        """Image and label (stored integer dtype) of case ``i`` inside ``bbox`` (within the case), on the device."""
        image, label = self.reader.read_region(self.case_id(i), bbox)
        return image.to(self.device), label.to(self.device)


def preprocess_dataset(
    dataset: SupervisedDataset,
    cache_dir: str | os.PathLike[str],
    *,
    device: Device = "cpu",
    **options: Any,
) -> PreprocessedDataset:
    """Build (or refresh) the cache of ``dataset`` in ``cache_dir`` and open it; see :func:`build_cache`."""
    return PreprocessedDataset(build_cache(dataset, cache_dir, **options).cache_dir, device=device)
