"""The synthetic dataset generator: nnU-Net layout on disk, determinism, class presence, intensities."""
from __future__ import annotations

import json

import pytest
import torch

from mipcandy.data.io import load_image
from mipcandy.data.synthetic import class_intensities, make_synthetic_dataset, synthetic_case


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_writes_nnunet_raw_layout(tmp_path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", num_cases=3, num_test_cases=2, shape=(10, 16, 16),
                                  num_classes=4, num_channels=2)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "MRI", "1": "MRI"}
    assert sorted(meta["labels"].values()) == [0, 1, 2, 3] and meta["labels"]["background"] == 0
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        f"case_00{i}_000{c}.nii.gz" for i in range(3) for c in range(2)]
    assert sorted(p.name for p in (root / "labelsTs").iterdir()) == ["case_003.nii.gz", "case_004.nii.gz"]
    assert len(list((root / "imagesTs").iterdir())) == 4
    image, geometry = load_image(root / "imagesTr" / "case_000_0001.nii.gz")
    assert image.shape == (1, 10, 16, 16) and image.dtype == torch.float32
    assert geometry.spacing == (2.0, 1.0, 1.0)  # anisotropic by default, in tensor axis order (z, y, x)
    label, _ = load_image(root / "labelsTr" / "case_000.nii.gz", is_label=True)
    assert label.shape == (1, 10, 16, 16)


@pytest.mark.parametrize(
    ("ndim", "shape", "modality", "num_classes"),
    [(3, (12, 20, 20), "MRI", 3), (3, (16, 16, 16), "CT", 5), (2, (40, 40), "MRI", 7)],
)
def test_every_case_holds_every_class(ndim: int, shape: tuple[int, ...], modality: str, num_classes: int) -> None:
    spacing = (2.0, 1.0, 1.0)[-ndim:] if ndim == 3 else (1.0, 1.0)
    for index in range(4):
        image, label = synthetic_case(index, shape=shape, spacing=spacing, num_classes=num_classes,
                                      modality=modality, num_channels=2)  # type: ignore[arg-type]
        assert image.shape == (2, *shape) and label.shape == (1, *shape)
        assert torch.isfinite(image).all()
        assert torch.unique(label).tolist() == list(range(num_classes))


def test_deterministic_under_the_seed(tmp_path) -> None:
    kwargs = {"num_cases": 2, "num_test_cases": 1, "shape": (8, 12, 12)}
    first = _files(make_synthetic_dataset(tmp_path / "a", seed=3, **kwargs))
    second = _files(make_synthetic_dataset(tmp_path / "b", seed=3, **kwargs))
    other = _files(make_synthetic_dataset(tmp_path / "c", seed=4, **kwargs))
    assert first == second
    assert first.keys() == other.keys()
    assert first["labelsTr/case_000.nii.gz"] != other["labelsTr/case_000.nii.gz"]


def test_a_case_depends_only_on_seed_and_index() -> None:
    kwargs = {"shape": (8, 12, 12), "spacing": (2.0, 1.0, 1.0), "num_classes": 3, "seed": 9}
    image, label = synthetic_case(4, **kwargs)
    again_image, again_label = synthetic_case(4, **kwargs)
    assert torch.equal(image, again_image) and torch.equal(label, again_label)
    assert not torch.equal(label, synthetic_case(5, **kwargs)[1])


def test_ct_intensities_follow_the_class() -> None:
    # CT has no bias field: each class's mean intensity is its dataset-level mean within per-case contrast jitter.
    image, label = synthetic_case(0, shape=(24, 32, 32), spacing=(2.0, 1.0, 1.0), num_classes=4, modality="CT")
    means = class_intensities(4, 1, "CT", seed=0)[0]
    for k in range(1, 4):
        measured = image[0][label[0] == k].mean()
        assert abs(measured - means[k + 1]) <= 0.1 * abs(means[k + 1]) + 10
    assert len(set(means[2:].tolist())) == 3  # classes are separable by intensity


def _octant_tissue_means(image: torch.Tensor, label: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean background-tissue intensity in each octant of the volume."""
    tissue = (label[0] == 0) & (image[0] > threshold)
    d, h, w = (n // 2 for n in image.shape[1:])
    means = []
    for z in (slice(0, d), slice(d, None)):
        for y in (slice(0, h), slice(h, None)):
            for x in (slice(0, w), slice(w, None)):
                means.append(image[0][z, y, x][tissue[z, y, x]].mean())
    return torch.stack(means)


def test_mri_has_a_smooth_bias_field_and_ct_has_none() -> None:
    # Tissue has one mean intensity per case; only a large-scale multiplicative field makes octants differ by more
    # than the noise allows (noise sigma 8-15 over thousands of voxels moves an octant mean by well under 1).
    kwargs = {"shape": (24, 40, 40), "spacing": (2.0, 1.0, 1.0), "num_classes": 2, "seed": 1}
    image, label = synthetic_case(1, **kwargs)
    mri = _octant_tissue_means(image, label, threshold=30)
    assert (mri.max() - mri.min()) / mri.mean() > 0.1
    image, label = synthetic_case(1, modality="CT", **kwargs)
    ct = _octant_tissue_means(image, label, threshold=-500)
    assert ct.max() - ct.min() < 3


def test_refuses_a_non_empty_folder_and_bad_arguments(tmp_path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("x", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        make_synthetic_dataset(tmp_path / "ds", num_cases=1, shape=(8, 8, 8))
    with pytest.raises(ValueError, match="needs 2 shape"):
        make_synthetic_dataset(tmp_path / "new", ndim=2, shape=(8, 8, 8))
    with pytest.raises(ValueError, match="modality"):
        make_synthetic_dataset(tmp_path / "new", modality="PET")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Could not fit"):
        synthetic_case(0, shape=(2, 2, 2), spacing=(1.0, 1.0, 1.0), num_classes=4)
