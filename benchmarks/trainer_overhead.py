"""How much slower is an epoch through ``SegmentationTrainer`` than through a hand-written PyTorch loop?

Both paths train the same network (candy_unet's U-Net, small ``--hidden`` channels, same seed, so the same initial
weights) on the same in-memory batches (a ``DataLoader`` over batches cut once by ``RandomROIDataset``, consumed
identically by both) with the same loss (``segmentation_loss``), the same optimizer (SGD lr 1e-2, momentum 0.99,
Nesterov, weight decay 3e-5), gradient-norm clipping at 12 and a poly (0.9) learning-rate step per epoch, for the
same number of iterations. The trainer is ``UNetTrainer`` (the segmentation preset, network built through the
``unet`` bundle, as ``candy train`` runs it). As a check that both paths do the same work, the mean loss of the
first epoch must agree.

Two times per epoch are compared, as medians over the epochs after the first (warm-up): the *iterations* (the
optimizer steps alone) and the whole *cycle* (from one epoch's first step to the next's: for the trainer this adds
the scheduler step and the end-of-epoch bookkeeping: checkpoint, full state, metrics.csv, progress.png, console
tables). Wall time and process CPU time (all threads) are both shown. Each trainer epoch is preceded by one
hand-loop epoch in the same process, and ratios are taken epoch by epoch, so that the load of other processes
(which drifts over seconds on a shared machine) hits both paths alike; ``--rounds`` repeats the minimum run.

First with the minimum features (no validation, EMA, previews, detail plots, deep supervision, plugin events or
console output): the goal is a ratio of at most 1.05. Then each feature is switched on alone over that minimum and
its added cost per epoch is printed, and finally all of them together. ``--profile`` prints where the minimum
trainer's time goes outside the network (cProfile).

Last, the tracking frontends: the time the loop spends per event (``ExperimentWriter.emit``: the bundles' broadcast
plus queueing for the frontends) with three frontends selected, MLflow (embedded SQLite), W&B (offline) and a stub
that sleeps 2 s per event; the goal is under 1 ms per event. Then what MLflow costs its worker per epoch (off the
loop). ``--frontends-only`` runs just this part.

Run: ``PYTHONPATH=core:plugins/unet python benchmarks/trainer_overhead.py [--ndim 3] [--patch 32] [--batch-size 2]
[--hidden 8 16 32 64] [--iterations 10] [--epochs 5] [--rounds 2] [--threads 2] [--profile]``; ``--quick`` is a
half-minute 2D smoke run of every path (one iteration per epoch: its ratios mean nothing).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from mipcandy import hookimpl
from mipcandy.common.optim import segmentation_loss
from mipcandy.data.dataset import SupervisedDataset, dataset_from_tensors
from mipcandy.data.geometry import Geometry
from mipcandy.data.roi import RandomROIDataset
from mipcandy.data.synthetic import synthetic_case

GOAL = 1.05
NUM_CLASSES = 3
SEED = 7
LR, MOMENTUM, WEIGHT_DECAY, CLIP, POLY = 1e-2, 0.99, 3e-5, 12.0, 0.9

MINIMUM: dict[str, Any] = {"validate": False, "ema": False, "preview": False, "plot_every": 10 ** 6,
                           "deep_supervision": False, "events": False, "console": False}
FEATURES: dict[str, dict[str, Any]] = {
    "validation (sliding window, every epoch)": {"validate": True},
    "validation + worst-case preview": {"validate": True, "preview": True},
    "EMA of the weights": {"ema": True},
    "detail plots every epoch": {"plot_every": 1},
    "deep supervision": {"deep_supervision": True},
    "plugin events": {"events": True},
    "live console (terminal)": {"console": True},
}
ALL = {"validate": True, "ema": True, "preview": True, "plot_every": 1, "deep_supervision": True, "events": True,
       "console": True}


class Batches(Dataset):
    """Ready-made ``(images, labels)`` batches; items are whole batches (``DataLoader(batch_size=None)``)."""

    def __init__(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[index]


@dataclass
class Setup:
    """What both paths share."""

    ndim: int
    patch: tuple[int, ...]
    hidden: tuple[int, ...]
    loader: DataLoader
    val: SupervisedDataset
    epochs: int


@dataclass
class Run:
    """Per-epoch times of one path in one run (index 0 is epoch 1) and its first epoch's mean loss."""

    iteration_wall: list[float] = field(default_factory=list)
    iteration_cpu: list[float] = field(default_factory=list)
    cycle_wall: list[float] = field(default_factory=list)
    cycle_cpu: list[float] = field(default_factory=list)
    first_loss: float = math.nan


def make_setup(ndim: int, patch: int, batch_size: int, hidden: Sequence[int], iterations: int, epochs: int) -> Setup:
    """Synthetic cases (twice the patch), ``iterations`` batches cut from 4 of them and 2 whole validation cases."""
    shape = (2 * patch,) * ndim
    geometry = Geometry.identity(ndim, (1.0,) * ndim)
    cases = {}
    for i in range(6):
        image, label = synthetic_case(i, shape=shape, spacing=(1.0,) * ndim, num_classes=NUM_CLASSES, seed=SEED)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, geometry)
    data = dataset_from_tensors(cases)
    patches = RandomROIDataset(data.subset([f"case{i}" for i in range(4)]), batch_size, patch_shape=(patch,) * ndim,
                               seed=SEED)
    loader = DataLoader(Batches([patches[i] for i in range(iterations)]), batch_size=None)
    return Setup(ndim, (patch,) * ndim, tuple(hidden), loader, data.subset(["case4", "case5"]), epochs)


def make_network(setup: Setup, deep_supervision: bool = False) -> torch.nn.Module:
    from candy_unet import make_unet2d, make_unet3d

    builder = make_unet2d if setup.ndim == 2 else make_unet3d
    return builder(1, NUM_CLASSES, hidden_chs=setup.hidden, deep_supervision=deep_supervision)


class HandLoop:
    """The plain PyTorch loop the trainer is measured against, one epoch per ``epoch()`` call."""

    def __init__(self, setup: Setup) -> None:
        self.setup, self.run, self.done = setup, Run(), 0
        torch.manual_seed(SEED)
        iter(setup.loader)  # the trainer opens its loader before building the network (same use of the RNG)
        self.network = make_network(setup).train()
        self.criterion = segmentation_loss(NUM_CLASSES)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=LR, momentum=MOMENTUM,
                                         weight_decay=WEIGHT_DECAY, nesterov=True)

    def epoch(self) -> None:
        run, network, optimizer = self.run, self.network, self.optimizer
        wall, cpu = time.perf_counter(), time.process_time()
        total = 0.0
        for images, labels in self.setup.loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = self.criterion(network(images), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), CLIP)
            optimizer.step()
            total += float(loss.detach())
        run.iteration_wall.append(time.perf_counter() - wall)
        run.iteration_cpu.append(time.process_time() - cpu)
        self.done += 1
        for group in optimizer.param_groups:
            group["lr"] = LR * (1 - self.done / self.setup.epochs) ** POLY
        if self.done == 1:
            run.first_loss = total / len(self.setup.loader)
        run.cycle_wall.append(time.perf_counter() - wall)
        run.cycle_cpu.append(time.process_time() - cpu)


def paired_run(setup: Setup, root: Path, features: dict[str, Any]) -> tuple[Run, Run]:
    """``UNetTrainer`` with ``features``, each of its epochs preceded by one hand-loop epoch: (hand, trainer).

    Pairing the epochs makes the comparison robust to the load of other processes, which drifts over seconds.
    The trainer's epochs are timed around its ``_train_epoch``, the hand epoch in between taken out.
    """
    from candy_unet.unet_trainer import UNetTrainer

    hand, ours = HandLoop(setup), Run()
    starts: list[tuple[float, float]] = []
    between: list[tuple[float, float]] = []

    class Timed(UNetTrainer):
        def _train_epoch(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            hand.epoch()
            between.append((time.perf_counter() - wall, time.process_time() - cpu))
            wall, cpu = time.perf_counter(), time.process_time()
            starts.append((wall, cpu))
            means = super()._train_epoch(*args, **kwargs)
            ours.iteration_wall.append(time.perf_counter() - wall)
            ours.iteration_cpu.append(time.process_time() - cpu)
            return means

        def _forecast(self, epoch: int, row: dict[str, Any]) -> Any:
            # Guard for a trainer bug (its forecast zips the epochs with a shorter score list when an epoch has
            # no validation); the forecast needs a validation score anyway.
            return super()._forecast(epoch, row) if "val score" in row else None

    console = Console(file=io.StringIO(), force_terminal=True, width=120) if features["console"] else \
        Console(quiet=True)
    trainer = Timed(root, setup.loader, setup.val if features["validate"] else None, console=console,
                    events=features["events"])
    trainer.train(setup.epochs, seed=SEED, num_classes=NUM_CLASSES, iterations_per_epoch=len(setup.loader),
                  bundle_options={"hidden_chs": setup.hidden}, validate_every=1 if features["validate"] else 0,
                  ema=features["ema"], preview=features["preview"], plot_every=features["plot_every"],
                  deep_supervision=features["deep_supervision"])
    starts.append((time.perf_counter(), time.process_time()))
    between.append((0.0, 0.0))
    for (wall, cpu), (next_wall, next_cpu), (hand_wall, hand_cpu) in zip(starts, starts[1:], between[1:],
                                                                         strict=False):
        ours.cycle_wall.append(next_wall - wall - hand_wall)
        ours.cycle_cpu.append(next_cpu - cpu - hand_cpu)
    ours.first_loss = trainer.history["combined loss"][0]
    return hand.run, ours


def measured(run: Run, attribute: str) -> list[float]:
    """Every epoch but the first (warm-up) and, for cycles, the last (its end adds the once-per-run final plots)."""
    series = getattr(run, attribute)
    return series[1:-1] if attribute.startswith("cycle") else series[1:]


def pooled(runs: Sequence[Run], attribute: str) -> list[float]:
    return [value for run in runs for value in measured(run, attribute)]


def paired(hand: Sequence[Run], ours: Sequence[Run], attribute: str, combine: Callable[[float, float], float]) \
        -> list[float]:
    """``combine(trainer, hand)`` of each measured epoch with the hand epoch run just before it."""
    return [combine(b, a) for h, o in zip(hand, ours, strict=True)
            for a, b in zip(measured(h, attribute), measured(o, attribute), strict=True)]


ATTRIBUTES = ("iteration_wall", "iteration_cpu", "cycle_wall", "cycle_cpu")


def print_comparison(title: str, hand: Sequence[Run], ours: Sequence[Run]) -> dict[str, float]:
    """Median seconds per epoch of both paths and the median of the per-epoch ratios, for each of the four times."""
    print(f"\n{title}")
    print(f"  {'seconds per epoch':<20}{'hand loop':>11}{'trainer':>11}{'ratio':>8}   epoch ratios min-max")
    ratios = {}
    for attribute in ATTRIBUTES:
        a, b = statistics.median(pooled(hand, attribute)), statistics.median(pooled(ours, attribute))
        each = paired(hand, ours, attribute, lambda t, h: t / h)
        ratios[attribute] = statistics.median(each)
        print(f"  {attribute.replace('_', ' '):<20}{a:>11.3f}{b:>11.3f}{ratios[attribute]:>8.3f}   "
              f"{min(each):.3f}-{max(each):.3f}")
    return ratios


def profile_minimum(setup: Setup, root: Path, top: int) -> None:
    """cProfile of one minimum-feature paired run (the hand loop included), by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    paired_run(setup, root, MINIMUM)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(r"mipcandy[/\\](training|visualization|layer|atomic)", top)
    print("\ncProfile of one minimum-feature paired run, the trainer's own functions (cumulative):")
    print(text.getvalue())


EVENT_GOAL_MS = 1.0
SLEEP_SECONDS = 2.0


class SleepingFrontend:
    """A tracker that takes 2 s per event (a slow network)."""

    @hookimpl
    def epoch_updated(self, experiment_id: str, epoch: int) -> None:
        time.sleep(SLEEP_SECONDS)


def epoch_metrics(epoch: int) -> dict[str, Any]:
    """A row of the size the segmentation trainer emits (losses, per-class Dice, lr, time, the worst case's id)."""
    row: dict[str, Any] = {"combined loss": 1.0 / epoch, "soft dice": 0.5, "ce loss": 0.4, "learning rate": 0.01,
                           "val loss": 0.9 / epoch, "val score": 0.5, "val score (smoothed)": 0.45,
                           "worst case": "case_007", "epoch duration": 30.0, "predicted max": 0.8}
    row.update({f"val dice {c}": 0.1 * c for c in range(1, 11)})
    return row


def frontend_overhead(root: Path, events: int) -> dict[str, float]:
    """Per-event time of ``ExperimentWriter.emit`` with MLflow, W&B and the sleeping stub selected; then MLflow's
    time per epoch on its worker. Returns the numbers printed."""
    import os

    from mipcandy.frontend import open_frontends, register_frontend
    from mipcandy.frontend.mlflow_frontend import MLflowFrontend
    from mipcandy.training.experiment import ExperimentWriter

    for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        (root / f"wandb_{name.lower()}").mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(f"WANDB_{name}", str(root / f"wandb_{name.lower()}"))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    register_frontend(SleepingFrontend(), "sleeper")
    folder = root / "Demo" / "unet" / "fold_0" / "run"
    folder.mkdir(parents=True)
    frontends = open_frontends(["mlflow", "wandb", "sleeper"], root=root)
    writer = ExperimentWriter(folder, folder.name, console=Console(quiet=True), frontends=frontends)
    times = []
    config = {"options": {"lr": 0.01, "batch_size": 2, "patch": [128, 128, 128]}, "bundle": "unet"}
    for hook, kwargs in [("experiment_created", {"folder": folder, "config": config}),
                         *(("epoch_updated", {"epoch": e, "metrics": epoch_metrics(e)}) for e in range(1, events + 1)),
                         ("experiment_completed", {"summary": {"best_score": 0.5, "best_epoch": events}})]:
        started = time.perf_counter()
        writer.emit(hook, experiment_id=folder.name, **kwargs)
        times.append(time.perf_counter() - started)
    emitted = time.perf_counter()
    stats = frontends.stats()
    while any(stats[n].delivered + stats[n].failed < len(times) for n in ("mlflow", "wandb")) and \
            time.perf_counter() - emitted < 300:
        time.sleep(0.05)
    drained = time.perf_counter() - emitted
    frontends.close(timeout=0.0)  # the sleeper would need 2 s per event: it is left behind (and reported)
    per_event = sorted(t * 1000 for t in times)
    numbers = {"median_ms": statistics.median(per_event), "p99_ms": per_event[int(0.99 * (len(per_event) - 1))],
               "max_ms": per_event[-1]}
    print(f"\nTracking frontends (MLflow embedded, W&B offline, a stub sleeping {SLEEP_SECONDS:.0f} s per event): "
          f"ExperimentWriter.emit over {len(times)} events")
    print(f"  per event: median {numbers['median_ms']:.3f} ms, p99 {numbers['p99_ms']:.3f} ms, max "
          f"{numbers['max_ms']:.3f} ms ({'meets' if numbers['p99_ms'] < EVENT_GOAL_MS else 'misses'} the goal of "
          f"{EVENT_GOAL_MS:g} ms)")
    print(f"  MLflow and W&B had every event {drained:.1f} s after the last emit (imports and store creation "
          f"included); failures: {stats['mlflow'].failed + stats['wandb'].failed}")
    mlflow = MLflowFrontend()  # the same work the mlflow worker does, timed on its own
    mlflow.experiment_created(experiment_id="timed", folder=root / "Demo" / "unet" / "fold_0" / "timed",
                              config=config, root=root, model_summary=None, num_parameters=None, num_macs=None)
    costs = []
    for epoch in range(1, max(events, 3) + 1):
        started = time.perf_counter()
        mlflow.epoch_updated(experiment_id="timed", epoch=epoch, metrics=epoch_metrics(epoch), best_score=0.5)
        costs.append(time.perf_counter() - started)
    numbers["mlflow_epoch_ms"] = statistics.median(costs) * 1000
    print(f"  MLflow (SQLite) logging per epoch, on its worker thread: median {numbers['mlflow_epoch_ms']:.1f} ms")
    return numbers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3)
    parser.add_argument("--patch", type=int, default=32, help="patch edge (default 32)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 32, 64], help="U-Net channels per stage")
    parser.add_argument("--iterations", type=int, default=10, help="iterations per epoch (default 10)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run, the first one is warm-up (min 3)")
    parser.add_argument("--rounds", type=int, default=2, help="paired runs with the minimum features")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-features", action="store_true", help="skip the per-feature costs")
    parser.add_argument("--profile", action="store_true", help="cProfile one minimum-feature trainer run")
    parser.add_argument("--frontends-only", action="store_true", help="only the tracking frontends' cost per event")
    parser.add_argument("--frontend-events", type=int, default=200, help="epoch events for the frontends (200)")
    parser.add_argument("--quick", action="store_true", help="a short 2D smoke run (its ratios mean nothing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ndim, args.patch, args.hidden, args.iterations, args.epochs, args.rounds = 2, 16, [4, 8], 1, 3, 1
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (one warm-up epoch, one measured cycle, one last epoch)")
    torch.set_num_threads(args.threads)
    if args.frontends_only:
        with tempfile.TemporaryDirectory() as folder:
            frontend_overhead(Path(folder), args.frontend_events)
        return 0
    setup = make_setup(args.ndim, args.patch, args.batch_size, args.hidden, args.iterations, args.epochs)
    print(f"{args.ndim}D U-Net hidden {tuple(args.hidden)}, batch {args.batch_size}x1x{'x'.join(map(str, setup.patch))}"
          f", {args.iterations} iterations/epoch, {args.epochs} epochs/run (first = warm-up), {args.threads} threads")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        pairs = [paired_run(setup, root, MINIMUM) for _ in range(args.rounds)]
        hand, ours = [h for h, _ in pairs], [o for _, o in pairs]
        difference = abs(hand[0].first_loss - ours[0].first_loss)
        print(f"first-epoch mean loss: hand {hand[0].first_loss:.6f}, trainer {ours[0].first_loss:.6f} "
              f"({'same work' if difference <= 1e-4 * abs(hand[0].first_loss) else 'DIFFERENT: check the setup'})")
        ratios = print_comparison("Minimum features (medians of paired epochs)", hand, ours)
        bookkeeping = statistics.median(pooled(ours, "cycle_wall")) - statistics.median(pooled(ours, "iteration_wall"))
        print(f"  iterations: {'meets' if ratios['iteration_wall'] <= GOAL else 'misses'} the goal of {GOAL}; "
              f"end-of-epoch bookkeeping adds {bookkeeping:.3f} s wall per epoch (whole-cycle ratio "
              f"{ratios['cycle_wall']:.3f}: {'meets' if ratios['cycle_wall'] <= GOAL else 'misses'} the goal)")
        if not args.no_features:
            extra = {a: statistics.median(paired(hand, ours, a, lambda t, h: t - h))
                     for a in ("cycle_wall", "cycle_cpu")}
            scale = statistics.median(pooled(hand, "cycle_wall"))
            print(f"\nCost of each feature over the minimum: median over epochs of (trainer cycle - paired hand "
                  f"epoch), minus the minimum's ({extra['cycle_wall']:+.3f} s wall, {extra['cycle_cpu']:+.3f} s CPU); "
                  f"% of the hand loop's {scale:.3f} s epoch")
            print(f"  {'feature':<44}{'+wall s':>9}{'+CPU s':>9}{'+%':>8}")
            for name, features in {**FEATURES, "all of them": ALL}.items():
                h, o = paired_run(setup, root, {**MINIMUM, **features})
                wall = statistics.median(paired([h], [o], "cycle_wall", lambda t, x: t - x)) - extra["cycle_wall"]
                cpu = statistics.median(paired([h], [o], "cycle_cpu", lambda t, x: t - x)) - extra["cycle_cpu"]
                print(f"  {name:<44}{wall:>+9.3f}{cpu:>+9.3f}{100 * wall / scale:>+8.1f}")
            print_comparison("All features vs the hand loop (which has none of them)", [h], [o])
        if args.profile:
            profile_minimum(setup, root, 30)
        frontend_overhead(root / "tracking", args.frontend_events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
