"""Patches per second of our training data pipeline against TorchIO's and MONAI's, on CPU.

One synthetic 3D dataset (``make_synthetic_dataset``: ``--cases`` cases of ``--size``^3, 1 mm isotropic, 3 classes)
is preprocessed once into our safetensors cache (z-score normalization, no resampling needed). Each pipeline then
serves ``--patch``^3 patches in batches of ``--batch-size`` with the full augmentation set, with every DataLoader
worker count in ``--workers``; the table shows the median patches/s of ``--repeats`` runs (runs interleave the
pipelines so that background load hits all of them alike) and the ratio ours / faster peer per worker count.

How the comparison is kept fair:

- Data: all three read the same preprocessed volumes. Ours reads patches from the safetensors cache
  (``RandomROIDataset`` over ``PreprocessedDataset``: only the patch bytes, from the page cache). The peers get the
  volumes as in-memory tensors loaded once before timing (labels uint8), which is the most favourable realistic
  setup for them: no file decoding at all. MONAI additionally caches the foreground/background voxel indices
  (``CacheDataset`` + ``FgBgToIndicesd``, as its tutorials do) and runs with ``set_track_meta(False)`` (its fast
  training guide), so ``RandCropByPosNegLabeld`` never scans a label map while timed.
- Sampling: patch ``--patch``^3, batch ``--batch-size``. Ours: nnU-Net's rule with oversample 0.33, i.e. the last
  ``round(B * 0.33)`` samples of a batch (1 of 2) are centred on a voxel of a random present class, the rest are
  uniform. TorchIO: ``LabelSampler`` with probabilities {0: 0.5, 1: 0.25, 2: 0.25} (half of the patches centred on
  foreground, classes equally likely, as nnU-Net picks the class). MONAI: ``RandCropByPosNegLabeld(pos=1, neg=1)``
  (half on foreground, MONAI's default). Each patch comes from its own draw of augmentation parameters: TorchIO runs
  with ``samples_per_volume=1`` (``--samples-per-volume`` raises it, which amortizes its whole-volume augmentation
  over several correlated patches).
- Augmentation, nnU-Net's probabilities mapped onto each library: rotation (+-30 deg per axis) p 0.2 and scaling
  (0.7-1.4) p 0.2 drawn independently, i.e. an affine resampling with p 1 - 0.8^2 = 0.36 (ours resamples exactly
  those samples; MONAI ``RandAffined(prob=0.36)`` with a cached grid and TorchIO ``RandomAffine(p=0.36)`` rotate and
  scale together), Gaussian noise p 0.1, blur p 0.2 (sigma 0.5-1), brightness p 0.15 (0.75-1.25), contrast p 0.15,
  low resolution p 0.25 (zoom 0.5-1), gamma p 0.3 and inverted gamma p 0.1 (0.7-1.5, stats retained), mirror p 0.5
  per axis. MONAI has a transform for every step (``RandGaussianNoised``, ``RandGaussianSmoothd``,
  ``RandScaleIntensityd``, ``RandScaleIntensityFixedMeand``, ``RandSimulateLowResolutiond``,
  ``RandAdjustContrastd`` twice, ``RandFlipd`` per axis). TorchIO has no brightness, contrast, low-resolution or
  inverted-gamma transform, so it runs only ``RandomAffine``, ``RandomNoise``, ``RandomBlur``, ``RandomGamma`` and
  ``RandomFlip`` (less work than the others: in its favour). TorchIO augments the whole volume before sampling (that
  is how its ``Queue`` works); ours and MONAI augment the patch.
- Loading: the main process uses ``torch.set_num_threads(--threads)`` (2); DataLoader workers use PyTorch's default
  of one thread each. Ours: ``RandomROIDataset(..., augmentation=NNUNetAugmentation(inplace=True))`` and its
  ``.loader(num_workers=W)`` (each item is a whole batch, augmented in the worker). MONAI:
  ``monai.data.DataLoader(num_workers=W)``. TorchIO: ``Queue(num_workers=W)`` inside a
  ``SubjectsLoader(num_workers=0)``, as TorchIO requires. Every pipeline is one stream without epoch boundaries
  (ours: ``num_patches_per_case`` covers the run; MONAI: a sampler of that length; TorchIO: the subject list
  repeated), so workers start once; the first ``--warmup`` batches (worker start-up,
  first fills) are not timed, then exactly ``--batches`` batches are.

Run: ``PYTHONPATH=core python benchmarks/data_pipeline.py`` (defaults: 8 cases of 160^3, 128^3 patches, batch 2,
workers 0, 1 and 2, 3 repeats); ``--quick`` for tiny sizes. Exit status 2 when MONAI or TorchIO is missing (install
the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from mipcandy.data.augment.pipeline import NNUNetAugmentation
from mipcandy.data.inspection import InspectionAnnotations, inspect
from mipcandy.data.nnunet import NNUNetDataset
from mipcandy.data.preprocess import PreprocessedDataset, preprocess_dataset
from mipcandy.data.roi import RandomROIDataset
from mipcandy.data.synthetic import make_synthetic_dataset

NUM_CLASSES = 3
OVERSAMPLE = 0.33
# nnU-Net's default augmentation probabilities (field anchors, section 1).
P_ROTATION, P_SCALING = 0.2, 0.2
P_AFFINE = 1 - (1 - P_ROTATION) * (1 - P_SCALING)  # a sample is resampled when it rotates or scales
P_NOISE, P_BLUR, P_BRIGHTNESS, P_CONTRAST, P_LOW_RES, P_GAMMA, P_GAMMA_INVERTED, P_MIRROR = (
    0.1, 0.2, 0.15, 0.15, 0.25, 0.3, 0.1, 0.5)
ROTATION_DEGREES, SCALING, GAMMA, SIGMA, NOISE_STD = 30.0, (0.7, 1.4), (0.7, 1.5), (0.5, 1.0), (0.0, 0.1)

Batches = Iterable[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Setup:
    """What every pipeline is asked for."""

    patch: int
    batch_size: int
    total_batches: int  # warm-up included


@dataclass(frozen=True)
class Data:
    """The benchmark dataset: our cache (with its inspection) and the same volumes in memory for the peers."""

    cached: PreprocessedDataset
    annotations: InspectionAnnotations
    volumes: list[tuple[Tensor, Tensor]]  # (1, *spatial) float32 image, (1, *spatial) uint8 label


def prepare_data(root: Path, *, cases: int, size: int, seed: int, console: Console) -> Data:
    """Generate (once per ``root``) the synthetic raw dataset, preprocess it into the cache and load it."""
    raw, cache = root / "raw", root / "cache"
    if not (raw / "dataset.json").is_file():
        with console.status(f"Generating {cases} synthetic cases of {size}^3"):
            make_synthetic_dataset(raw, num_cases=cases, shape=(size,) * 3, spacing=(1.0, 1.0, 1.0),
                                   num_classes=NUM_CLASSES, seed=seed, progress=False)
    with console.status("Preprocessing into the cache and inspecting"):
        cached = preprocess_dataset(NNUNetDataset(raw), cache, progress=False, crop=False)
        annotations = inspect(cached, progress=False)
        volumes = [(image.float().contiguous(), label.to(torch.uint8)) for image, label in
                   (cached[i] for i in range(len(cached)))]
    return Data(cached, annotations, volumes)


def ours(data: Data, setup: Setup, workers: int) -> Batches:
    """RandomROIDataset over the cache with nnU-Net's augmentation run on each batch in the worker."""
    augmentation = NNUNetAugmentation.for_patch_size((setup.patch,) * 3, inplace=True)
    per_case = math.ceil(setup.total_batches * setup.batch_size / len(data.annotations))
    roi = RandomROIDataset(data.annotations, setup.batch_size, oversample_rate=OVERSAMPLE,
                           num_patches_per_case=per_case, patch_shape=(setup.patch,) * 3,
                           augmentation=augmentation, seed=int(torch.randint(2**31, ())))
    return roi.loader(num_workers=workers)


def monai_pipeline(data: Data, setup: Setup, workers: int) -> Iterator[tuple[Tensor, Tensor]]:
    """CacheDataset (volumes + fg/bg indices cached) -> RandCropByPosNegLabeld -> nnU-Net-like transforms."""
    from monai import transforms as mt
    from monai.data import CacheDataset, DataLoader, get_track_meta, set_track_meta

    previous = get_track_meta()
    set_track_meta(False)  # global MONAI state: restored when the stream is closed
    keys, size = ("image", "label"), (setup.patch,) * 3
    radians = math.radians(ROTATION_DEGREES)
    flips = [mt.RandFlipd(keys, prob=P_MIRROR, spatial_axis=axis) for axis in range(3)]
    transform = mt.Compose([
        mt.FgBgToIndicesd("label"),  # deterministic: cached by CacheDataset
        mt.RandCropByPosNegLabeld(keys, "label", size, pos=1.0, neg=1.0, num_samples=1,
                                  fg_indices_key="label_fg_indices", bg_indices_key="label_bg_indices"),
        mt.DeleteItemsd(["label_fg_indices", "label_bg_indices"]),
        mt.RandAffined(keys, spatial_size=size, prob=P_AFFINE, rotate_range=(radians,) * 3,
                       scale_range=(SCALING[0] - 1, SCALING[1] - 1), mode=("bilinear", "nearest"),
                       padding_mode="zeros", cache_grid=True),
        mt.RandGaussianNoised("image", prob=P_NOISE, std=NOISE_STD[1]),
        mt.RandGaussianSmoothd("image", sigma_x=SIGMA, sigma_y=SIGMA, sigma_z=SIGMA, prob=P_BLUR),
        mt.RandScaleIntensityd("image", factors=0.25, prob=P_BRIGHTNESS),
        mt.RandScaleIntensityFixedMeand("image", factors=0.25, preserve_range=True, prob=P_CONTRAST),
        mt.RandSimulateLowResolutiond("image", prob=P_LOW_RES, zoom_range=(0.5, 1.0)),
        mt.RandAdjustContrastd("image", prob=P_GAMMA_INVERTED, gamma=GAMMA, invert_image=True, retain_stats=True),
        mt.RandAdjustContrastd("image", prob=P_GAMMA, gamma=GAMMA, retain_stats=True),
        *flips,
    ])
    items = [{"image": image, "label": label} for image, label in data.volumes]
    dataset = CacheDataset(items, transform, cache_rate=1.0, num_workers=None, progress=False)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=setup.total_batches * setup.batch_size)
    loader = DataLoader(dataset, batch_size=setup.batch_size, sampler=sampler, num_workers=workers)
    try:
        for batch in loader:
            yield batch["image"], batch["label"]
    finally:
        set_track_meta(previous)


def torchio_pipeline(data: Data, setup: Setup, workers: int, samples_per_volume: int = 1) -> Batches:
    """SubjectsDataset (augmenting whole volumes) -> Queue(LabelSampler, num_workers=W) -> SubjectsLoader(0)."""
    import torchio as tio

    subjects = [tio.Subject(image=tio.ScalarImage(tensor=image), label=tio.LabelMap(tensor=label))
                for image, label in data.volumes]
    needed = math.ceil(setup.total_batches * setup.batch_size / samples_per_volume)
    subjects = (subjects * math.ceil(needed / len(subjects)))[:needed]
    transform = tio.Compose([
        tio.RandomAffine(scales=SCALING, degrees=ROTATION_DEGREES, default_pad_value=0, p=P_AFFINE),
        tio.RandomNoise(std=NOISE_STD, p=P_NOISE),
        tio.RandomBlur(std=SIGMA, p=P_BLUR),
        tio.RandomGamma(log_gamma=(math.log(GAMMA[0]), math.log(GAMMA[1])), p=P_GAMMA),
        tio.RandomFlip(axes=(0, 1, 2), flip_probability=P_MIRROR),
    ])
    probabilities = {0: 0.5, **dict.fromkeys(range(1, NUM_CLASSES), 0.5 / (NUM_CLASSES - 1))}
    # The queue fills when empty, max_length patches at a time: one fill per samples_per_volume batches keeps the
    # cost inside the timed batches (total and warm-up batches are multiples of samples_per_volume); the subjects
    # loader's workers still run ahead in the background.
    queue = tio.Queue(tio.SubjectsDataset(subjects, transform=transform),
                      max_length=setup.batch_size * samples_per_volume,
                      samples_per_volume=samples_per_volume,
                      sampler=tio.LabelSampler(setup.patch, "label", probabilities), num_workers=workers)
    loader = tio.SubjectsLoader(queue, batch_size=setup.batch_size, num_workers=0)
    return ((batch["image"][tio.DATA], batch["label"][tio.DATA]) for batch in loader)


def measure(batches: Batches, setup: Setup, warmup: int) -> float:
    """Patches per second over the batches after the first ``warmup`` (checked for shape)."""
    iterator: Iterator[tuple[Tensor, Tensor]] = iter(batches)
    expected = (setup.batch_size, 1, *(setup.patch,) * 3)
    start = 0.0
    count = 0
    for k, (image, label) in enumerate(iterator):
        if tuple(image.shape) != expected or tuple(label.shape) != expected:
            raise RuntimeError(f"batch {k}: got image {tuple(image.shape)} and label {tuple(label.shape)}, "
                               f"expected {expected}")
        if k == warmup - 1:
            start = time.perf_counter()
        elif k >= warmup:
            count += 1
            if k == setup.total_batches - 1:
                break
    elapsed = time.perf_counter() - start
    with contextlib.suppress(AttributeError, TypeError):
        iterator.close()  # type: ignore[attr-defined]  # generators: release the loader and its workers now
    if count != setup.total_batches - warmup:
        raise RuntimeError(f"The pipeline stopped after {warmup + count} of {setup.total_batches} batches")
    return count * setup.batch_size / elapsed


def run(pipelines: dict[str, Callable[[Data, Setup, int], Batches]], data: Data, setup: Setup, *,
        workers: list[int], warmup: int, repeats: int, console: Console) -> dict[tuple[str, int], list[float]]:
    """Patches/s of every (pipeline, workers) pair, ``repeats`` times, interleaved."""
    rates: dict[tuple[str, int], list[float]] = {}
    for repeat in range(repeats):
        for w in workers:
            for name, make in pipelines.items():
                with console.status(f"run {repeat + 1}/{repeats}: {name}, {w} workers"):
                    rate = measure(make(data, setup, w), setup, warmup)
                rates.setdefault((name, w), []).append(rate)
                console.log(f"run {repeat + 1}: {name:8s} workers={w}: {rate:.2f} patches/s")
    return rates


def report(rates: dict[tuple[str, int], list[float]], names: list[str], workers: list[int],
           console: Console) -> dict[int, float]:
    """Print the table; returns ours / faster peer per worker count."""
    table = Table(title="Patches per second (median of runs; min-max)")
    table.add_column("pipeline")
    for w in workers:
        table.add_column(f"{w} workers", justify="right")
    medians = {key: statistics.median(values) for key, values in rates.items()}
    for name in names:
        table.add_row(name, *(f"{medians[name, w]:.2f} ({min(rates[name, w]):.2f}-{max(rates[name, w]):.2f})"
                              for w in workers))
    ratios = {w: medians["ours", w] / max(medians[n, w] for n in names if n != "ours") for w in workers}
    table.add_row("ours / faster peer", *(f"{ratios[w]:.2f}x" for w in workers), style="bold")
    console.print(table)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=160, help="edge of the cubic volumes")
    parser.add_argument("--patch", type=int, default=128, help="edge of the cubic patches")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=16, help="timed batches per run (warm-up excluded)")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing starts")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the main process")
    parser.add_argument("--samples-per-volume", type=int, default=1, help="TorchIO Queue samples_per_volume")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the generated dataset and cache here (reused when present); default: temporary")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: 2 cases of 48^3, 32^3 patches, 3 batches")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.size, args.patch, args.batches, args.warmup, args.repeats = 2, 48, 32, 3, 1, 1
    counts = (args.batches, args.warmup, args.repeats, args.threads, args.samples_per_volume)
    if min(counts) < 1 or args.patch > args.size:
        parser.error("--batches, --warmup, --repeats, --threads and --samples-per-volume must be >= 1 and --patch "
                     "must not exceed --size")
    console = Console()
    try:
        import monai  # noqa: F401
        import torchio  # noqa: F401
    except ImportError as err:
        console.print(f"[red]{err.name} is not installed; install the bench extra (pip install '.[bench]')")
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spv = args.samples_per_volume
    args.warmup, args.batches = (spv * math.ceil(n / spv) for n in (args.warmup, args.batches))
    setup = Setup(args.patch, args.batch_size, args.warmup + args.batches)
    pipelines: dict[str, Callable[[Data, Setup, int], Batches]] = {
        "ours": ours,
        "TorchIO": lambda d, s, w: torchio_pipeline(d, s, w, args.samples_per_volume),
        "MONAI": monai_pipeline,
    }
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mipcandy-bench-")))
        data = prepare_data(root, cases=args.cases, size=args.size, seed=args.seed, console=console)
        console.print(f"{args.cases} cases of {args.size}^3, {args.patch}^3 patches, batch {args.batch_size}, "
                      f"{args.batches} timed batches after {args.warmup} warm-up, {args.repeats} runs, "
                      f"{args.threads} main-process threads")
        rates = run(pipelines, data, setup, workers=args.workers, warmup=args.warmup, repeats=args.repeats,
                    console=console)
    ratios = report(rates, list(pipelines), args.workers, console)
    console.print("Goal: ours >= 2x the faster peer: " + ", ".join(
        f"{w} workers {'met' if r >= 2 else 'NOT met'}" for w, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
