"""Data-parallel scaling on the CPU with gloo: iterations per second of 1 against N processes at a fixed batch per
process (weak scaling), through ``SegmentationTrainer`` exactly as ``candy train`` runs under torchrun.

Each configuration is one ``python -m torch.distributed.run --standalone --nproc_per_node=N`` launch of this file.
Every process trains candy_unet's 3D U-Net (``--hidden`` channels) on random patches of in-memory synthetic cases,
with validation, previews and detail plots off, ``--threads`` torch threads per process (1 by default: one core
per process, as one GPU per process). One process is a plain single-process run (no process group, no DDP); two or
more wrap the network in DistributedDataParallel and average the gradients over gloo every step. As a control, N
independent single-process runs at once ("independent") pay for sharing the cores and memory without any
communication: DDP's own cost is the gap between the two rows. The time of an iteration is the median over the
epochs after the first of rank 0's recorded epoch duration divided by the iterations per epoch (the end-of-epoch
writes of rank 0 are outside it).

Printed: seconds per iteration, iterations/s, samples/s (global batch x iterations/s) and the scaling efficiency
``iterations/s(N) / iterations/s(1)`` (against the first count given): 1.0 means N processes train N times as many
samples per second. On a machine with fewer free cores than processes the efficiency is bounded by the cores, not by
the method, so the machine's cores and load are printed too, with the size of the gradients all-reduced per step.

Run: ``python benchmarks/ddp_scaling.py [--processes 1 2] [--patch 32] [--batch-size 2] [--hidden 8 16 32]
[--iterations 8] [--epochs 3] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

NUM_CLASSES = 3
SEED = 7


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--patch", type=int, default=32, help="edge of the cubic patch")
    parser.add_argument("--batch-size", type=int, default=2, help="patches per process and step")
    parser.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 32], help="U-Net channels per stage")
    parser.add_argument("--iterations", type=int, default=8, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)  # set by the launch
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> None:
    """One rank of one configuration: train and leave ``metrics.csv`` under ``args.worker``."""
    import torch
    from rich.console import Console

    from mipcandy.data.dataset import dataset_from_tensors
    from mipcandy.data.geometry import Geometry
    from mipcandy.data.roi import RandomROIDataset
    from mipcandy.data.synthetic import synthetic_case
    from mipcandy.presets import SegmentationTrainer

    torch.set_num_threads(args.threads)
    shape, spacing = (2 * args.patch,) * 3, (1.0,) * 3
    cases = {}
    for i in range(4):
        image, label = synthetic_case(i, shape=shape, spacing=spacing, num_classes=NUM_CLASSES, seed=SEED)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(3, spacing))
    patches = RandomROIDataset(dataset_from_tensors(cases), args.batch_size, patch_shape=(args.patch,) * 3, seed=SEED)
    trainer = SegmentationTrainer(args.worker, patches, None, console=Console(quiet=True))
    trainer.train(args.epochs, bundle="unet", bundle_options={"hidden_chs": args.hidden}, num_classes=NUM_CLASSES,
                  iterations_per_epoch=args.iterations, validate_every=0, preview=False, plot_every=10 ** 6, seed=SEED)


def worker_command(args: argparse.Namespace, root: Path) -> list[str]:
    return [__file__, "--worker", str(root), "--patch", str(args.patch), "--batch-size", str(args.batch_size),
            "--iterations", str(args.iterations), "--epochs", str(args.epochs), "--threads", str(args.threads),
            "--hidden", *map(str, args.hidden)]


def seconds_per_iteration(args: argparse.Namespace, root: Path) -> float:
    """Median over the epochs after the first of the run under ``root``."""
    (metrics,) = root.rglob("metrics.csv")
    durations = [float(row["epoch duration"]) for row in csv.DictReader(metrics.open(encoding="utf-8"))]
    return statistics.median(durations[1:] or durations) / args.iterations


def launch(args: argparse.Namespace, processes: int, root: Path, *, independent: bool = False) -> float:
    """Seconds per iteration of ``processes`` processes: one torchrun launch, or (``independent``) as many
    single-process runs at once, whose mean is returned (the cost of sharing the machine, without DDP)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if independent:
        commands = [[sys.executable, *worker_command(args, root / str(i))] for i in range(processes)]
    else:
        commands = [[sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                     *worker_command(args, root)]]
    running = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8", env=env)
               for c in commands]
    for process in running:
        _, error = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{processes} process(es) failed:\n{error[-3000:]}")
    roots = [root / str(i) for i in range(processes)] if independent else [root]
    return statistics.mean(seconds_per_iteration(args, r) for r in roots)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        train(args)
        return 0
    import torch

    from mipcandy.plugins import build_network

    network = build_network("unet", (1, *(args.patch,) * 3), NUM_CLASSES, {"hidden_chs": args.hidden})
    parameters = sum(p.numel() for p in network.parameters() if p.requires_grad)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"torch {torch.__version__}, gloo on the CPU: {cores} cores, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; {args.threads} thread(s) per process; 3D U-Net "
          f"{args.hidden}, patch {args.patch}^3, batch {args.batch_size} per process, {args.iterations} iterations x "
          f"{args.epochs} epochs; {parameters / 1e6:.2f} M parameters ({parameters * 4 / 2 ** 20:.1f} MiB of float32 "
          "gradients all-reduced per step)")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for processes in args.processes:
            rows.append((f"{processes} DDP" if processes > 1 else "1", processes,
                         launch(args, processes, Path(folder) / f"n{processes}")))
            if processes > 1:
                rows.append((f"{processes} independent", processes,
                             launch(args, processes, Path(folder) / f"i{processes}", independent=True)))
    baseline = 1 / rows[0][2]
    print(f"{'processes':>15} {'global batch':>12} {'s/iteration':>11} {'iterations/s':>12} {'samples/s':>9} "
          f"{'efficiency':>10}")
    for name, processes, seconds in rows:
        rate = 1 / seconds
        batch = processes * args.batch_size if "independent" not in name else args.batch_size
        print(f"{name:>15} {batch:>12} {seconds:>11.3f} {rate:>12.2f} {rate * processes * args.batch_size:>9.1f} "
              f"{rate / baseline:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
