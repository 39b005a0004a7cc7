"""Datasets over real NIfTI files: nnU-Net raw reading and validation, composition, export round trip."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mipcandy.data.dataset import BinarizedDataset, DatasetError, MergedDataset, dataset_from_tensors
from mipcandy.data.export import export_nnunet
from mipcandy.data.geometry import Geometry
from mipcandy.data.io import load_image, save_image
from mipcandy.data.nnunet import NNUNetDataset, NNUNetImageDataset
from mipcandy.data.synthetic import make_synthetic_dataset

SHAPE = (6, 10, 12)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "ds", num_cases=4, num_test_cases=1,
                                  shape=SHAPE, num_classes=3, num_channels=2, seed=5)


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    """A private copy that a test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def _edit_json(folder: Path, **changes: object) -> None:
    path = folder / "dataset.json"
    content = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            content.pop(key)
        else:
            content[key] = value
    path.write_text(json.dumps(content), encoding="utf-8")


def _rewrite(path: Path, *, is_label: bool = False, data=None, **geometry_changes: object) -> None:
    """Rewrite a NIfTI file with new voxels and/or geometry fields."""
    tensor, geometry = load_image(path, is_label=is_label)
    fields = {**geometry.to_dict(), **geometry_changes}
    save_image(tensor if data is None else data(tensor), path, Geometry.from_dict(fields))


# Reading -------------------------------------------------------------------------------------------------------------

def test_reads_cases_with_channels_stacked_in_order(pristine: Path) -> None:
    dataset = NNUNetDataset(pristine)
    assert dataset.case_ids == ["case_000", "case_001", "case_002", "case_003"] and len(dataset) == 4
    assert dataset.channel_names == {0: "MRI", 1: "MRI"} and dataset.num_classes == 3
    assert dataset.file_ending == ".nii.gz" and dataset.dataset_json["numTraining"] == 4
    for i, case in enumerate(dataset.case_ids):
        image, label = dataset[i]
        assert image.shape == (2, *SHAPE) and image.dtype == torch.float32
        assert label.shape == (1, *SHAPE) and label.dtype == torch.int64
        for c in range(2):
            expected, _ = load_image(pristine / "imagesTr" / f"{case}_{c:04d}.nii.gz")
            assert torch.equal(image[c : c + 1], expected)
        assert torch.equal(label, load_image(pristine / "labelsTr" / f"{case}.nii.gz", is_label=True)[0])
        assert set(torch.unique(label).tolist()) == {0, 1, 2}
        assert dataset.geometry(i).spacing == (2.0, 1.0, 1.0)
    dataset.validate()


def test_nnunet_reads_the_same_arrays(pristine: Path) -> None:
    # nnU-Net's own reader is the reference for channel stacking, axis order and spacing order.
    simpleitk_io = pytest.importorskip("nnunetv2.imageio.simpleitk_reader_writer")
    reader = simpleitk_io.SimpleITKIO()
    dataset = NNUNetDataset(pristine)
    for i, case in enumerate(dataset.case_ids):
        files = [str(pristine / "imagesTr" / f"{case}_{c:04d}.nii.gz") for c in range(2)]
        images, properties = reader.read_images(files)
        seg, _ = reader.read_seg(str(pristine / "labelsTr" / f"{case}.nii.gz"))
        assert torch.equal(dataset.image(i), torch.from_numpy(images).float())
        assert torch.equal(dataset.label(i), torch.from_numpy(seg).long())
        assert dataset.geometry(i).spacing == tuple(properties["spacing"])


def test_nnunet_accepts_our_datasets(pristine: Path) -> None:
    # nnU-Net's integrity check (dataset.json keys, file names, grids, label values) on a generated dataset.
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    verify.verify_dataset_integrity(str(pristine), num_processes=1)


def test_test_split_with_and_without_labels(pristine: Path) -> None:
    labelled = NNUNetDataset(pristine, split="Ts")
    images = NNUNetImageDataset(pristine)
    assert labelled.case_ids == images.case_ids == ["case_004"]
    assert torch.equal(images[0], labelled[0][0])
    images.validate()


def test_subsets_devices_and_loading(pristine: Path) -> None:
    dataset = NNUNetDataset(pristine)
    sub = dataset.subset(["case_003", "case_001"])
    assert isinstance(sub, NNUNetDataset) and sub.case_ids == ["case_001", "case_003"]
    assert torch.equal(sub.label(1), dataset.label(3)) and sub.index("case_003") == 1
    assert sub.case_id(-1) == "case_003"
    with pytest.raises(KeyError, match="case_009"):
        dataset.subset(["case_009"])
    with pytest.raises(IndexError):
        dataset.case_id(4)
    moved = dataset.to("meta")  # a device tensors can be moved to without hardware
    assert moved.image(0).device.type == "meta" and moved.label(0).device.type == "meta"
    assert dataset.image(0).device.type == "cpu"
    images, labels = next(iter(DataLoader(dataset, batch_size=2)))
    assert images.shape == (2, 2, *SHAPE) and labels.shape == (2, 1, *SHAPE)


# Validation: one test per problem, each message must name the case (or file) ----------------------------------------

def test_missing_dataset_json_key(raw: Path) -> None:
    _edit_json(raw, file_ending=None)
    with pytest.raises(DatasetError, match="lacks the key 'file_ending'"):
        NNUNetDataset(raw)


def test_missing_dataset_json(raw: Path) -> None:
    (raw / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        NNUNetDataset(raw)


def test_missing_channel_file(raw: Path) -> None:
    (raw / "imagesTr" / "case_001_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'case_001': channel 1 \(MRI\) file imagesTr/case_001_0001.nii.gz"):
        NNUNetDataset(raw)


def test_unknown_channel_index(raw: Path) -> None:
    shutil.copy(raw / "imagesTr" / "case_002_0000.nii.gz", raw / "imagesTr" / "case_002_0005.nii.gz")
    with pytest.raises(DatasetError, match="case 'case_002': imagesTr/case_002_0005.nii.gz has channel index 5"):
        NNUNetDataset(raw)


def test_unexpected_file(raw: Path) -> None:
    (raw / "imagesTr" / "notes.txt").write_text("x", encoding="utf-8")
    (raw / "imagesTr" / ".DS_Store").write_text("hidden files are ignored", encoding="utf-8")
    with pytest.raises(DatasetError, match="imagesTr/notes.txt is not named CASE_XXXX.nii.gz") as err:
        NNUNetDataset(raw)
    assert len(err.value.problems) == 1


def test_missing_label_file(raw: Path) -> None:
    (raw / "labelsTr" / "case_003.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case 'case_003': label file labelsTr/case_003.nii.gz is missing"):
        NNUNetDataset(raw)


def test_missing_labels_folder(raw: Path) -> None:
    shutil.rmtree(raw / "labelsTs")
    with pytest.raises(DatasetError, match="folder labelsTs/ is missing.*NNUNetImageDataset"):
        NNUNetDataset(raw, split="Ts")
    assert len(NNUNetImageDataset(raw, split="Ts")) == 1


def test_label_without_images(raw: Path) -> None:
    shutil.copy(raw / "labelsTr" / "case_000.nii.gz", raw / "labelsTr" / "case_077.nii.gz")
    with pytest.raises(DatasetError, match="labelsTr/case_077.nii.gz matches no case"):
        NNUNetDataset(raw)


def test_num_training_mismatch(raw: Path) -> None:
    _edit_json(raw, numTraining=9)
    with pytest.raises(DatasetError, match="numTraining=9 but imagesTr/ holds 4"):
        NNUNetDataset(raw)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"background": 0, "whole": [1, 2], "core": 2}, r"region-based labels \['whole'\] are not supported yet"),
        ({"background": 0, "a": 1, "b": 2, "ignore": 3}, "'ignore' label is not supported yet"),
        ({"background": 0, "a": 2}, "without gaps"),
    ],
)
def test_unsupported_or_bad_label_declarations(raw: Path, labels: dict, message: str) -> None:
    _edit_json(raw, labels=labels)
    with pytest.raises(DatasetError, match=message):
        NNUNetDataset(raw)


def test_channel_grid_mismatch(raw: Path) -> None:
    _rewrite(raw / "imagesTr" / "case_002_0001.nii.gz", spacing=[3.0, 1.0, 1.0])
    dataset = NNUNetDataset(raw)  # structure is fine; contents are checked on read
    with pytest.raises(DatasetError, match="case 'case_002': imagesTr/case_002_0001.nii.gz is not on the grid.*spac"):
        dataset[2]
    dataset[1]


def test_label_grid_mismatch(raw: Path) -> None:
    _rewrite(raw / "labelsTr" / "case_000.nii.gz", is_label=True, origin=[0.0, 5.0, 0.0])
    with pytest.raises(DatasetError, match="case 'case_000': labelsTr/case_000.nii.gz is not on the image grid.*orig"):
        NNUNetDataset(raw).label(0)


def test_label_shape_mismatch(raw: Path) -> None:
    _rewrite(raw / "labelsTr" / "case_001.nii.gz", is_label=True, data=lambda t: t[:, :, :-1])
    with pytest.raises(DatasetError, match="case 'case_001': labelsTr/case_001.nii.gz .*shape"):
        NNUNetDataset(raw)[1]


def test_undeclared_label_value(raw: Path) -> None:
    _rewrite(raw / "labelsTr" / "case_003.nii.gz", is_label=True, data=lambda t: torch.where(t == 2, 7, t))
    with pytest.raises(DatasetError, match=r"case 'case_003': labelsTr/case_003.nii.gz holds label value\(s\) \[7\]"):
        NNUNetDataset(raw)[3]


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_nan_intensities(tmp_path: Path, ending: str) -> None:
    # SimpleITK's NIfTI reader turns NaN/Inf into 0 (nifticlib); load_image reads NIfTI voxels itself to see them.
    image = torch.rand(1, *SHAPE)
    image[0, 0, 0, :3] = torch.tensor([torch.nan, torch.inf, -torch.inf])
    cases = {"good": (torch.rand(1, *SHAPE), torch.zeros(1, *SHAPE, dtype=torch.long), Geometry.identity(3)),
             "bad": (image, torch.zeros(1, *SHAPE, dtype=torch.long), Geometry.identity(3))}
    folder = export_nnunet(dataset_from_tensors(cases), tmp_path / "ds", name="nan", channel_names={0: "CT"},
                           labels={"background": 0}, file_ending=ending)
    dataset = NNUNetDataset(folder)
    dataset.image(dataset.index("good"))
    with pytest.raises(DatasetError, match=f"case 'bad': .*bad_0000{ending} holds 1 NaN and 2 infinite voxel"):
        dataset.image(dataset.index("bad"))


def test_validate_lists_every_bad_case(raw: Path) -> None:
    _rewrite(raw / "imagesTr" / "case_000_0001.nii.gz", direction=[0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    _rewrite(raw / "labelsTr" / "case_002.nii.gz", is_label=True, data=lambda t: t + 5)
    (raw / "labelsTr" / "case_003.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DatasetError) as err:
        NNUNetDataset(raw).validate()
    problems = err.value.problems
    assert len(problems) == 3
    assert "case 'case_000'" in problems[0] and "direction" in problems[0]
    assert "case 'case_002'" in problems[1] and "not declared" in problems[1]
    assert "case 'case_003'" in problems[2] and "case_003.nii.gz" in problems[2]
    assert "3 problem(s)" in str(err.value)


# Composition and export ----------------------------------------------------------------------------------------------

def test_binarized_dataset(pristine: Path) -> None:
    base = NNUNetDataset(pristine)
    binary = BinarizedDataset(base, [2])
    assert binary.case_ids == base.case_ids
    for i in range(len(base)):
        image, label = binary[i]
        assert torch.equal(image, base.image(i))
        assert torch.equal(label, (base.label(i) == 2).long())
        assert binary.geometry(i) == base.geometry(i)
    _, val = binary.fold(0, num_folds=2)
    assert isinstance(val, BinarizedDataset) and len(val) == 2
    assert torch.equal(val.label(1), (base.label(base.index(val.case_id(1))) == 2).long())
    with pytest.raises(ValueError, match="at least one"):
        BinarizedDataset(base, [])


def test_merged_dataset_keeps_case_ids_unique(pristine: Path, tmp_path: Path) -> None:
    first = NNUNetDataset(pristine)
    second = NNUNetDataset(make_synthetic_dataset(tmp_path / "other", num_cases=2, shape=SHAPE, num_channels=2, seed=9))
    with pytest.raises(ValueError, match="clash.*prefixes"):
        MergedDataset([first, second])
    merged = MergedDataset([first, second], prefixes=["a_", "b_"])
    assert len(merged) == 6 and merged.case_ids[:2] == ["a_case_000", "a_case_001"]
    image, label = merged[merged.index("b_case_001")]
    assert torch.equal(image, second.image(1)) and torch.equal(label, second.label(1))
    assert merged.geometry(merged.index("a_case_002")) == first.geometry(2)


def test_export_round_trip_keeps_data_and_geometry(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    oblique = Geometry((2.5, 0.8, 0.7), (-10.0, 20.5, 3.25), (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    cases = {
        f"pt{i}": (torch.randn(2, *SHAPE, generator=generator), torch.randint(0, 3, (1, *SHAPE), generator=generator),
                   oblique if i else Geometry.identity(3, (1.0, 1.0, 1.0)))
        for i in range(3)
    }
    source = dataset_from_tensors(cases)
    folder = export_nnunet(source, tmp_path / "Dataset900_Export", name="Export", channel_names={0: "T1", 1: "T2"},
                           labels={"background": 0, "a": 1, "b": 2})
    back = NNUNetDataset(folder)
    back.validate()
    assert back.case_ids == source.case_ids and back.channel_names == {0: "T1", 1: "T2"}
    for i in range(len(source)):
        assert torch.equal(back.image(i), source.image(i)) and torch.equal(back.label(i), source.label(i))
        ours, theirs = back.geometry(i), source.geometry(i)
        for field in ("spacing", "origin", "direction"):  # NIfTI stores these as float32
            assert getattr(ours, field) == pytest.approx(getattr(theirs, field), abs=1e-5)
    assert not [p for p in folder.rglob(".*")]  # no temporary files left


def test_export_rejects_mismatches(pristine: Path, tmp_path: Path) -> None:
    dataset = NNUNetDataset(pristine)
    with pytest.raises(DatasetError, match="case 'case_000' has 2 channels but channel_names declares 1"):
        export_nnunet(dataset, tmp_path / "a", name="x", channel_names={0: "MRI"}, labels=dataset.labels)
    with pytest.raises(DatasetError, match=r"case 'case_000' holds label value\(s\) \[2\] not in labels"):
        export_nnunet(dataset, tmp_path / "b", name="x", channel_names=dataset.channel_names,
                      labels={"background": 0, "a": 1})
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_nnunet(dataset, pristine, name="x", channel_names=dataset.channel_names, labels=dataset.labels)
