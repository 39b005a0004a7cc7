"""K-fold cross-validation end to end: ``run_folds`` over a tiny synthetic nnU-Net dataset read from NIfTI files."""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from torch import nn

from mipcandy.data.nnunet import NNUNetDataset
from mipcandy.data.roi import RandomROIDataset
from mipcandy.data.synthetic import make_synthetic_dataset
from mipcandy.presets import SegmentationTrainer
from mipcandy.training.kfold import run_folds
from mipcandy.training.options import TrainingOptions

NUM_FOLDS = 2


class FoldTrainer(SegmentationTrainer):
    default_options = TrainingOptions(iterations_per_epoch=2)
    """A one-convolution network; records the cases the trainer validates."""


    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.validated: list[str] = []

    def build_network(self, example_shape):
        return nn.Conv2d(example_shape[0], self.options.num_classes, 3, padding=1)

    def validate_case(self, case_id, image, label, toolbox):
        self.validated.append(case_id)
        return super().validate_case(case_id, image, label, toolbox)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> NNUNetDataset:
    root = make_synthetic_dataset(tmp_path_factory.mktemp("kfold") / "Dataset002_Folds", ndim=2, num_cases=5,
                                  shape=(24, 24), num_classes=3, progress=False)
    return NNUNetDataset(root)


def test_run_folds_trains_each_fold_apart_and_validates_every_case_once(dataset: NNUNetDataset,
                                                                         tmp_path: Path) -> None:
    trainers: dict[int, FoldTrainer] = {}

    def make_trainer(fold: int) -> FoldTrainer:
        train, val = dataset.fold(fold, num_folds=NUM_FOLDS)
        patches = RandomROIDataset(train, 2, patch_shape=(16, 16), seed=fold)
        trainers[fold] = FoldTrainer(tmp_path, patches, val, console=Console(quiet=True), events=False)
        return trainers[fold]

    output = Console(file=io.StringIO(), width=400, color_system=None)
    summaries = run_folds(make_trainer, list(range(NUM_FOLDS)), 1, console=output, seed=3, preview=False)

    assert len(summaries) == NUM_FOLDS
    folders = [s.folder for s in summaries]
    assert len(set(folders)) == NUM_FOLDS
    assert all(f.parent == tmp_path / "Dataset002_Folds" / "FoldTrainer" for f in folders)
    all_validated: list[str] = []
    for fold, summary in enumerate(summaries):
        trainer = trainers[fold]
        assert summary.epochs == 1 and trainer.experiment_folder == summary.folder
        assert (summary.folder / "checkpoint_latest.safetensors").is_file()
        trained_on = set(trainer.train_data.annotations.case_ids)
        assert trained_on and trainer.validated, f"fold {fold} trained or validated nothing"
        assert not trained_on & set(trainer.validated), f"fold {fold} validates cases it trains on"
        assert len(trained_on) + len(trainer.validated) == len(dataset)
        log = (summary.folder / "logs.txt").read_text(encoding="utf-8")
        assert all(case in log for case in trainer.validated)  # the per-case validation table
        rows = list(csv.DictReader((summary.folder / "metrics.csv").open()))
        assert [r["epoch"] for r in rows] == ["1"]
        assert summary.best_score == pytest.approx(float(rows[0]["val score"]))
        all_validated += trainer.validated
    counts = Counter(all_validated)
    assert sorted(counts) == dataset.case_ids and set(counts.values()) == {1}, counts

    text = output.file.getvalue()
    assert "Cross-validation" in text
    rows = [cells(line) for line in text.splitlines() if "│" in line]
    for fold, summary in enumerate(summaries):
        assert [str(fold), f"{summary.best_score:.4f}", "1", "1", str(summary.folder)] in rows
    mean = sum(s.best_score for s in summaries) / NUM_FOLDS
    assert ["mean", f"{mean:.4f}", "", "", ""] in rows


def cells(line: str) -> list[str]:
    """The cells of one row of a rich table."""
    return [cell.strip() for cell in line.strip().strip("│").split("│")]
