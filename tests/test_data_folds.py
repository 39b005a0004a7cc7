"""Cross-validation folds by case id: nnU-Net's default split, splits_final.json, and dataset.fold()."""
from __future__ import annotations

import json

import pytest
import torch

from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.folds import kfold_splits, load_splits, save_splits, select_fold
from mipcandy.data.geometry import Geometry


def _ids(n: int) -> list[str]:
    # Deliberately unsorted and with mixed widths, so sorting matters.
    return [f"case_{i}" for i in reversed(range(n))]


@pytest.mark.parametrize("n", [5, 7, 12, 23, 100])
@pytest.mark.parametrize("num_folds", [2, 3, 5])
def test_every_case_validated_exactly_once_and_never_leaks(n: int, num_folds: int) -> None:
    splits = kfold_splits(_ids(n), num_folds=num_folds)
    assert len(splits) == num_folds
    val_all = [c for s in splits for c in s["val"]]
    assert sorted(val_all) == sorted(_ids(n))
    for split in splits:
        assert not set(split["train"]) & set(split["val"])
        assert sorted(split["train"] + split["val"]) == sorted(_ids(n))
    sizes = [len(s["val"]) for s in splits]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n", [5, 6, 11, 37, 100])
@pytest.mark.parametrize("seed", [12345, 0, 7])
@pytest.mark.parametrize("num_folds", [2, 5])
def test_matches_sklearn_kfold(n: int, seed: int, num_folds: int) -> None:
    sklearn_model_selection = pytest.importorskip("sklearn.model_selection")
    keys = sorted(_ids(n))
    kfold = sklearn_model_selection.KFold(n_splits=num_folds, shuffle=True, random_state=seed)
    expected = [{"train": [keys[i] for i in tr], "val": [keys[i] for i in va]} for tr, va in kfold.split(keys)]
    assert kfold_splits(_ids(n), num_folds=num_folds, seed=seed) == expected


def test_matches_nnunet_default_split() -> None:
    crossval = pytest.importorskip("nnunetv2.utilities.crossval_split")
    keys = sorted(_ids(17))
    expected = crossval.generate_crossval_split(keys, seed=12345, n_splits=5)
    assert kfold_splits(_ids(17)) == [{"train": list(s["train"]), "val": list(s["val"])} for s in expected]


def test_fold_all_trains_and_validates_on_every_case() -> None:
    train, val = select_fold(_ids(6), "all")
    assert train == val == sorted(_ids(6))


def test_bad_fold_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="Fold 5 does not exist.*folds 0 to 4"):
        select_fold(_ids(10), 5)
    with pytest.raises(ValueError, match="Fold -1 does not exist"):
        select_fold(_ids(10), -1)
    with pytest.raises(ValueError, match="integer index or 'all'"):
        select_fold(_ids(10), "first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Cannot split 3 case"):
        kfold_splits(_ids(3), num_folds=5)
    with pytest.raises(ValueError, match="unique"):
        kfold_splits(["a", "a", "b"], num_folds=2)


def test_missing_splits_file_is_created_with_the_default_split(tmp_path) -> None:
    path = tmp_path / "splits_final.json"
    train, val = select_fold(_ids(10), 2, splits_file=path)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written == kfold_splits(_ids(10))
    assert (train, val) == (written[2]["train"], written[2]["val"])
    assert [p.name for p in tmp_path.iterdir()] == ["splits_final.json"]  # no temporary files left


def test_existing_splits_file_wins(tmp_path) -> None:
    path = tmp_path / "splits_final.json"
    custom = [{"train": ["case_0", "case_1"], "val": ["case_2"]}, {"train": ["case_2"], "val": ["case_0"]}]
    save_splits(custom, path)
    assert load_splits(path) == custom
    assert select_fold(_ids(4), 1, splits_file=path) == (["case_2"], ["case_0"])
    with pytest.raises(ValueError, match="Fold 2 does not exist.*folds 0 to 1"):
        select_fold(_ids(4), 2, splits_file=path)


def test_splits_file_with_unknown_cases_is_an_error(tmp_path) -> None:
    path = tmp_path / "splits_final.json"
    save_splits([{"train": ["case_0", "ghost"], "val": ["case_1"]}], path)
    with pytest.raises(ValueError, match="not in the dataset.*ghost"):
        select_fold(_ids(3), 0, splits_file=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("{}", "non-empty list"),
        ('[{"train": ["a"]}]', "fold 0 must be an object"),
        ('[{"train": ["a", "b"], "val": ["b"]}]', r"fold 0 has case\(s\) \['b'\] in both train and val"),
    ],
)
def test_malformed_splits_files_are_rejected(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "splits_final.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_splits(path)


def test_dataset_fold_returns_case_subsets(tmp_path) -> None:
    geometry = Geometry.identity(2)
    cases = {cid: (torch.full((1, 2, 2), float(i)), torch.zeros(1, 2, 2, dtype=torch.long), geometry)
             for i, cid in enumerate(_ids(7))}
    dataset = dataset_from_tensors(cases)
    seen_val: list[str] = []
    for k, split in enumerate(kfold_splits(_ids(7))):
        train, val = dataset.fold(k)
        assert train.case_ids == sorted(split["train"]) and val.case_ids == sorted(split["val"])
        assert not set(train.case_ids) & set(val.case_ids)
        seen_val += val.case_ids
        for i in range(len(val)):  # items follow their case, not the position in the parent
            assert val[i][0][0, 0, 0].item() == _ids(7).index(val.case_id(i))
    assert sorted(seen_val) == dataset.case_ids
    train, val = dataset.fold(0, splits_file=tmp_path / "splits_final.json")
    assert (tmp_path / "splits_final.json").exists()
    assert len(train) + len(val) == 7
