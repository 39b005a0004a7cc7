"""Does ``mipcandy.data.sliding_window_inference`` agree with MONAI's, and is it as fast?

Runs one network (candy_unet's 3D U-Net with hidden channels 8-16-32-64 when the plugin is importable, a plain
conv net otherwise) over one random volume (192^3, 96^3 patches, overlap 0.5, Gaussian sigma 1/8) through ours and
``monai.inferers.sliding_window_inference(mode="gaussian")`` with the same windows per forward. Both run under
``torch.inference_mode()`` with the network in eval mode. Prints the maximum absolute difference of the softmax
probabilities (exit 1 above 1e-4; 2 when MONAI is missing: install the ``bench`` extra), the median times of
``--repeats`` runs after a warm-up, the ratio ours / MONAI, and how much of each run the network's forward passes
took (the rest is the windowing overhead being compared).

Window placement: ours uses nnU-Net's evenly spaced steps by default; for 192/96/0.5 they coincide with MONAI's
(0, 48, 96). For sizes where they differ, ``--steps monai`` keeps the comparison like for like.

Run: ``PYTHONPATH=core python benchmarks/sliding_window.py [--size 192] [--patch 96] [--batch-size 4]
[--threads 2] [--repeats 3] [--network unet|free]``; ``--size 64 --patch 32`` is a quick run, and
``--network free`` times the windowing overhead without a network.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

TOLERANCE = 1e-4


class TimedNetwork(nn.Module):
    """Wraps a network and adds up the wall time of its forward passes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seconds = 0.0

    def forward(self, x: Tensor) -> Tensor:
        start = time.perf_counter()
        out = self.net(x)
        self.seconds += time.perf_counter() - start
        return out


class PerClassScale(nn.Module):
    """A near-free 'network' (logit c = (c + 1) * x), so that the timings show the windowing overhead alone."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.arange(1.0, num_classes + 1).reshape(1, num_classes, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def make_network(num_classes: int, kind: str) -> tuple[nn.Module, str]:
    """candy_unet's 3D U-Net (small) when installed, else a plain conv net of similar depth; or the free one."""
    if kind == "free":
        return PerClassScale(num_classes), "per-class scaling (no network cost: windowing overhead only)"
    try:
        from candy_unet import make_unet3d
    except ImportError:
        layers: list[nn.Module] = []
        for cin, cout in ((1, 8), (8, 16), (16, 16)):
            layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU()]
        return nn.Sequential(*layers, nn.Conv3d(16, num_classes, 1)), "plain conv net (candy_unet not importable)"
    return make_unet3d(1, num_classes, hidden_chs=(8, 16, 32, 64)), "candy_unet.make_unet3d(1, C, (8, 16, 32, 64))"


@dataclass
class Timing:
    """Medians over the repeats: wall time, process CPU time (robust to other load), network forward time."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    network: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(self, name))


def time_interleaved(runs: dict[str, Callable[[], Tensor]], net: TimedNetwork,
                     repeats: int) -> tuple[dict[str, Tensor], dict[str, Timing]]:
    """One warm-up each, then ``repeats`` rounds alternating the runs, so that drifting load hits both alike."""
    results = {name: run() for name, run in runs.items()}
    timings = {name: Timing() for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            net.seconds = 0.0
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = run()
            timings[name].wall.append(time.perf_counter() - wall)
            timings[name].cpu.append(time.process_time() - cpu)
            timings[name].network.append(net.seconds)
    return results, timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192, help="edge of the cubic volume")
    parser.add_argument("--patch", type=int, default=96, help="edge of the cubic patch")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward, for both")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", choices=("nnunet", "monai"), default="nnunet")
    parser.add_argument("--network", choices=("unet", "free"), default="unet",
                        help="'free' replaces the U-Net by a per-class scaling to time the windowing alone")
    args = parser.parse_args(argv)
    try:
        from monai.inferers import sliding_window_inference as monai_sliding_window
    except ImportError:
        print("MONAI is not importable; install the bench extra (pip install -e .[bench])", file=sys.stderr)
        return 2
    from mipcandy.data import sliding_window_inference, window_slices

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, description = make_network(args.classes, args.network)
    timed_net = TimedNetwork(net).eval()
    image = torch.randn(1, 1, args.size, args.size, args.size)
    patch = (args.patch,) * 3
    windows = len(window_slices(image.shape[2:], patch, 0.5, args.steps))

    def ours() -> Tensor:
        return sliding_window_inference(image, timed_net, patch, overlap=0.5, batch_size=args.batch_size,
                                        steps=args.steps).softmax(0)

    def monai() -> Tensor:
        with torch.inference_mode():
            return monai_sliding_window(image, patch, args.batch_size, timed_net, overlap=0.5, mode="gaussian",
                                        sigma_scale=0.125)[0].softmax(0)

    print(f"network: {description}; volume {args.size}^3, patch {args.patch}^3, {windows} windows, "
          f"{args.batch_size} per forward, {args.threads} threads, median of {args.repeats}")
    results, timings = time_interleaved({"ours": ours, "MONAI": monai}, timed_net, args.repeats)
    difference = (results["ours"] - results["MONAI"]).abs().max().item()
    print(f"max |p_ours - p_monai|: {difference:.3e} (tolerance {TOLERANCE:.0e})")
    for name, timing in timings.items():
        wall, network = timing.median("wall"), timing.median("network")
        print(f"{name:>6}: wall {wall:8.3f} s, CPU {timing.median('cpu'):8.3f} s "
              f"(network {network:8.3f} s, windowing overhead {wall - network:6.3f} s)")
    ours, theirs = timings["ours"], timings["MONAI"]
    overheads = [t.median("wall") - t.median("network") for t in (ours, theirs)]
    print(f"time ratio ours/MONAI: wall {ours.median('wall') / theirs.median('wall'):.3f}, "
          f"CPU {ours.median('cpu') / theirs.median('cpu'):.3f}; overhead (wall - network) ratio "
          f"{overheads[0] / max(overheads[1], 1e-9):.3f}")
    return 0 if difference <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
