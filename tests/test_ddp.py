"""Data-parallel training under torchrun, on the CPU with gloo: 2 processes train like one process fed the same
global batch, write one experiment folder, and a run whose rank dies resumes exactly with ``--resume``.

This file is also the worker torchrun starts (``python -m torch.distributed.run ... tests/test_ddp.py``).
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mipcandy.cli import train_command
from mipcandy.common.optim import segmentation_loss
from mipcandy.data.dataset import dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.roi import EpochSampler, RandomROIDataset
from mipcandy.data.synthetic import make_synthetic_dataset, synthetic_case
from mipcandy.presets import SegmentationTrainer
from mipcandy.training import ResumeError, TrainingOptions, load_state, read_experiment_spec
from mipcandy.training.distributed import (
    DistributedError,
    RankBatches,
    World,
    every_head_weighted,
    launched_world,
    shard,
    sync_batch_norm,
)
from mipcandy.training.experiment import STATE

ROOT = Path(__file__).resolve().parents[1]
WORLD, EPOCHS, ITERATIONS, BATCH = 2, 3, 2, 2
# Per-epoch mean losses (training and validation) of the 2-process run and of one process fed the same global
# batches agree within this: the same gradients, summed in another order in float32, over 6 SGD steps.
LOSS_TOLERANCE = 1e-5


def cases() -> tuple[RandomROIDataset, object]:
    """Two training and four validation cases (two per rank), the same in every process."""
    tensors = {}
    for i in range(6):
        image, label = synthetic_case(i, shape=(24, 24), spacing=(1, 1), num_classes=3)
        tensors[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    data = dataset_from_tensors(tensors)
    return RandomROIDataset(data.subset(["case0", "case1"]), BATCH, patch_shape=(16, 16), seed=5), \
        data.subset(["case2", "case3", "case4", "case5"])


class SpareHead(nn.Module):
    """Two convolutions, and a head that takes no part in training (as deep supervision heads while it is off)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
        self.spare = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Tiny(SegmentationTrainer):
    """Per-sample Dice: the mean over 2 ranks' batches equals the loss of their concatenation (a batch Dice pools
    each rank's batch separately, so it would not)."""

    default_options = TrainingOptions(num_classes=3, iterations_per_epoch=ITERATIONS, plot_every=1000, seed=7)

    def build_network(self, example_shape):
        return SpareHead(example_shape[0])

    def build_criterion(self) -> nn.Module:
        return segmentation_loss(3, batch_dice=False)


class GlobalBatches(Dataset):
    """Batch k of one process = batches kW .. kW + W - 1 of ``batches``: what W ranks train on at step k."""

    def __init__(self, batches: RandomROIDataset, world: int) -> None:
        self.batches, self.world = batches, world

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        parts = [self.batches[index * self.world + r] for r in range(self.world)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def torchrun(*argv: str, fault: str = "") -> subprocess.CompletedProcess:
    """This file as ``python -m torch.distributed.run --standalone --nproc_per_node=2`` workers (a free port each
    time); ``fault`` = ``RANK:STEP`` SIGKILLs that rank before its STEP-th training step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CANDY_TEST_FAULT": fault, "COLUMNS": "1000",  # no wrapped lines
           "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={WORLD}", __file__, *argv], capture_output=True, encoding="utf-8",
                          env=env, timeout=300)


def experiments(root: Path) -> list[Path]:
    """Every experiment folder under ``root`` (a folder being created is hidden and has no record yet)."""
    return sorted(p.parent for p in root.rglob("config.json") if not p.parent.name.startswith("."))


def metrics(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "metrics.csv").open(encoding="utf-8")))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted 2-process run of ``EPOCHS`` epochs: its folder and the launch's output."""
    root = tmp_path_factory.mktemp("ddp")
    result = torchrun(str(root), "train")
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = experiments(root)
    return folder, result


def test_two_processes_train_like_one_with_the_global_batch(ddp_run, tmp_path: Path) -> None:
    folder, result = ddp_run
    assert result.stdout.count("Experiment ") == 1 and "Data-parallel on 2 processes (gloo)" in result.stdout
    spec = read_experiment_spec(folder)
    assert spec.sampling["world_size"] == WORLD and spec.sampling["batch_size"] == BATCH
    assert sorted(p.name for p in (folder / "preview").iterdir())  # the worst case's prediction reached rank 0

    train, val = cases()
    single = Tiny(tmp_path, DataLoader(GlobalBatches(train, WORLD), batch_size=None, sampler=EpochSampler(2)), val)
    single.train(EPOCHS, preview=False)
    (reference,) = experiments(tmp_path)
    expected, actual = metrics(reference), metrics(folder)
    assert len(actual) == len(expected) == EPOCHS
    columns = ("combined loss", "ce loss", "soft dice", "val loss")
    difference = max(abs(float(a[c]) - float(e[c])) for a, e in zip(actual, expected, strict=True) for c in columns)
    print(f"max |loss difference| over {EPOCHS} epochs: {difference:.3g}")
    assert difference <= LOSS_TOLERANCE, (actual, expected)
    assert len({row["combined loss"] for row in actual}) == EPOCHS  # it trained
    assert [row["worst case"] for row in actual] == [row["worst case"] for row in expected]

    with pytest.raises(ResumeError, match="trained on 2 process"):  # one process would change the global batch
        Tiny(tmp_path, train, val).recover_from(folder).continue_training(EPOCHS + 1)


def test_a_dead_rank_stops_the_job_and_resume_continues_exactly(ddp_run, tmp_path: Path) -> None:
    # Rank 1 dies at its 2nd step of epoch 2: its 1st step's gradient all-reduce waited for rank 0, which had
    # written epoch 1's state by then (a rank dying at the 1st step may stop rank 0 while it still writes).
    killed = torchrun(str(tmp_path), "train", fault=f"1:{ITERATIONS + 2}")
    assert killed.returncode != 0
    assert "exitcode  : -9" in killed.stderr  # torchrun names the rank that died, and stops the other
    (folder,) = experiments(tmp_path)
    assert load_state(folder / STATE)["epoch"] == 1 and len(metrics(folder)) == 1

    resumed = torchrun(str(tmp_path), "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("Resumed ") == 1
    expected, actual = load_state(ddp_run[0] / STATE), load_state(folder / STATE)
    assert actual["epoch"] == EPOCHS and actual["stream_position"] == expected["stream_position"]
    for key, value in expected["model"].items():
        assert torch.equal(actual["model"][key], value), f"{key} differs from the uninterrupted run"
    drop = ("epoch duration",)
    assert [{k: v for k, v in row.items() if k not in drop} for row in metrics(folder)] == \
        [{k: v for k, v in row.items() if k not in drop} for row in metrics(ddp_run[0])]


def test_candy_train_under_torchrun_writes_one_folder_per_run(tmp_path: Path) -> None:
    raw = make_synthetic_dataset(tmp_path / "Dataset010_DDP", ndim=2, num_cases=4, shape=(32, 32), num_classes=2,
                                 progress=False)
    # Both folds in one launch: the second run reuses the process group of the first.
    result = torchrun(str(tmp_path), "cli", "--dataset", str(raw), "--output", str(tmp_path / "out"), "--ddp",
                      "--fold", "cv", "--folds", "2", "--epochs", "1", "--iterations", "2", "--device", "cpu",
                      "--seed", "0", "--bundle-option", "hidden_chs=[4,8,16]", "--deep-supervision")
    assert result.returncode == 0, result.stderr[-3000:]
    folders = experiments(tmp_path / "out")
    assert [folder.parent.name for folder in folders] == ["fold_0", "fold_1"]
    printed = [line for line in result.stdout.splitlines() if line in {str(f) for f in folders}]
    assert sorted(printed) == [str(f) for f in folders]  # by rank 0 only
    assert result.stdout.count("Cross-validation") == 1
    spec = read_experiment_spec(folders[0])
    assert spec.sampling["world_size"] == WORLD
    # nnU-Net's weights for 2 heads are (1, 0); the head weighing 0 would stop DDP at the 2nd step: 1e-6 instead
    assert spec.options.deep_supervision_weights == pytest.approx((1, 1e-6), rel=1e-5)
    assert [row["epoch"] for row in metrics(folders[1])] == ["1"]


def test_ddp_flag_outside_torchrun_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    assert train_command.run(parser.parse_args(["--dataset", str(tmp_path), "--ddp"])) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err


@pytest.mark.parametrize(("environ", "message"), [
    ({"RANK": "0", "WORLD_SIZE": "2"}, "LOCAL_RANK not"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK=2, WORLD_SIZE=2"),
    ({"RANK": "one", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK='one'"),
])
def test_a_broken_launch_environment_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(DistributedError, match=message):
        launched_world(environ)
    assert launched_world({}) is None
    assert launched_world({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(1, 1, 4)


def test_ranks_share_batches_and_cases_without_overlap() -> None:
    train, _ = cases()
    shares = [RankBatches(train, rank, 2) for rank in range(2)]
    for step in range(3):  # step k of ranks 0 and 1 = batches 2k and 2k + 1 of one process
        for rank, share in enumerate(shares):
            assert all(torch.equal(a, b) for a, b in zip(share[step], train[2 * step + rank], strict=True))
    assert [list(shard(5, World(r, r, 2))) for r in range(2)] == [[0, 2, 4], [1, 3]]


def test_every_deep_supervision_head_gets_a_gradient() -> None:
    # nnU-Net weighs its lowest head 1e-6 instead of 0 under DDP (nnunetv2 nnUNetTrainer._build_loss)
    weights = every_head_weighted(None, 3)
    assert weights == pytest.approx((2 / 3, 1 / 3, 1e-6), rel=1e-5) and sum(weights) == pytest.approx(1)
    assert every_head_weighted((0.7, 0.3), 2) is None
    assert every_head_weighted((1.0, 0.0, 0.0), 3) == pytest.approx((1, 1e-6, 1e-6), rel=1e-5)


def test_batch_norm_becomes_sync_batch_norm_on_gpus_only() -> None:
    network = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 2, 1))
    weight = network[1].weight
    converted, note = sync_batch_norm(network, torch.device("cuda", 0))  # converting needs no GPU
    assert isinstance(converted[1], nn.SyncBatchNorm) and converted[1].weight is weight and "SyncBatchNorm" in note
    kept, note = sync_batch_norm(nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4)), torch.device("cpu"))
    assert isinstance(kept[1], nn.BatchNorm3d) and "per rank" in note
    assert sync_batch_norm(nn.Conv3d(1, 4, 3), torch.device("cuda", 0))[1] is None


def worker(root: Path, mode: str, argv: list[str]) -> int:
    """One rank: ``train``, ``resume`` or ``cli`` (``candy train ARGV``), with the fault of ``CANDY_TEST_FAULT``."""
    torch.set_num_threads(1)
    fault = os.environ.get("CANDY_TEST_FAULT")
    if fault:
        rank, step = (int(v) for v in fault.split(":"))
        steps, train_step = [0], SegmentationTrainer.train_step

        def faulty_train_step(self, images, labels, toolbox):
            steps[0] += 1
            if int(os.environ["RANK"]) == rank and steps[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return train_step(self, images, labels, toolbox)

        SegmentationTrainer.train_step = faulty_train_step
    if mode == "cli":
        parser = argparse.ArgumentParser()
        train_command.configure(parser)
        return train_command.run(parser.parse_args(argv))
    train, val = cases()
    trainer = Tiny(root, train, val)
    if mode == "train":
        trainer.train(EPOCHS)
    else:
        (folder,) = experiments(root)
        trainer.recover_from(folder).continue_training()
    return 0


if __name__ == "__main__":
    sys.exit(worker(Path(sys.argv[1]), sys.argv[2], sys.argv[3:]))
