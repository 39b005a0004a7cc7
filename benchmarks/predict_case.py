"""How much of one whole prediction is not the network, and how does it compare with nnU-Net's?

One synthetic 3D case (``--shape`` 200x230x190 voxels at 1 mm: a body box with two organs and noise, zero
outside the body so that cropping matters) is written as NIfTI with SimpleITK and predicted with a network
trained at a coarser spacing (``--target-spacing`` 2 mm): z-score, crop to the nonzero box, cubic resampling,
Gaussian sliding windows of ``--patch`` 64^3 at overlap 0.5 without mirroring, probabilities (nnU-Net: logits)
resampled back linearly, argmax, uncrop, and a NIfTI label map written with the input's geometry.

The network is candy_unet's U-Net with nnU-Net's widths for that patch (32-64-128-256-320), random weights
(seed 0), the same weights on both sides; nnU-Net's predictor is given the very same module through
``nnUNetPredictor.manual_initialization`` with a plan built for this case (``3d_fullres``, DefaultPreprocessor,
``ZScoreNormalization``, order 3 for the image, order 1 for the logits). Both predictors run their network on the
CPU, and every forward pass is timed by one wrapper.

Stages, each timed alone through the public functions the predictors use:

- ours: reading (``Predictor.cases(...)[0].load()``), preprocessing (``preprocess_case``: crop, normalize,
  resample), the network over the sliding window (``sliding_window_inference``, split into the forward passes and
  the windowing around them), restoring (softmax, ``restore_probabilities``, labels) and writing (``save_image``);
  then ``Predictor.predict_to_files`` end to end, whose labels must equal the staged ones;
- nnU-Net: ``SimpleITKIO.read_images``, ``DefaultPreprocessor.run_case_npy``,
  ``nnUNetPredictor.predict_logits_from_preprocessed_data``,
  ``convert_predicted_logits_to_segmentation_with_correct_shape`` and ``SimpleITKIO.write_seg`` (the stages
  ``predict_single_npy_array`` runs, plus reading and writing).

Agreement first: the Dice of every foreground class between our labels and nnU-Net's must be at least
``--min-dice`` (exit 1 otherwise; the resampling kernels differ: Keys cubic in torch against scipy's B-spline, and
probabilities against logits interpolated back). Then the share of each pipeline spent outside the network's
forward passes (goal: at most 10% for ours on CPU) and the ratios ours / nnU-Net are printed. Exit 2 when
nnunetv2 is missing (the ``bench`` extra); ``--profile`` prints where our end-to-end run spends its time outside
the network (cProfile).

Run: ``PYTHONPATH=core:plugins/unet python benchmarks/predict_case.py [--shape 200 230 190] [--target-spacing 2]
[--patch 64] [--batch-size 4] [--threads 2] [--profile]``; ``--quick`` is a small smoke run (80x88x72 voxels,
narrow network, 32^3 patch).
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import SimpleITK as sitk
import torch
from torch import Tensor, nn

NUM_CLASSES = 3
GOAL = 0.10
INTENSITIES = (100.0, 160.0, 40.0)  # body (class 0), first organ, second organ
T = TypeVar("T")


class ForwardClock:
    """Adds up the wall time of a module's forward passes, through forward hooks (the module stays as it is)."""

    def __init__(self, module: nn.Module) -> None:
        self.seconds = 0.0
        self._started = 0.0
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_: Any) -> None:
        self._started = time.perf_counter()

    def _stop(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._started


@dataclass
class Stages:
    """Wall seconds per stage, and the forward passes' share of the sliding-window stage."""

    seconds: dict[str, float] = field(default_factory=dict)
    network: float = 0.0
    preprocessed_shape: tuple[int, ...] = ()

    def run(self, name: str, step: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = step()
        self.seconds[name] = time.perf_counter() - start
        return result

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def outside(self) -> float:
        return self.total - self.network


# --- the case and the network ------------------------------------------------------------------------------------

def synthetic_volume(shape: Sequence[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) float32/uint8 arrays: a noisy body box (zero outside, so that cropping removes all of the
    outside) holding two ellipsoid organs apart, one brighter and one darker than the body (so that no boundary
    passes through a third class's intensities)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")

    def ellipsoid(centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
        return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1

    body = np.logical_and.reduce([np.abs(g) <= 0.85 for g in grid])
    label = np.zeros(shape, dtype=np.uint8)
    label[ellipsoid((0.25, -0.3, 0.15), (0.3, 0.25, 0.3))] = 1
    label[ellipsoid((-0.3, 0.3, -0.2), (0.2, 0.25, 0.2))] = 2
    image = np.choose(label, INTENSITIES).astype(np.float32) + rng.normal(0, 6, shape).astype(np.float32)
    image[~body] = 0
    return image, label


def write_case(folder: Path, image: np.ndarray, spacing: Sequence[float]) -> Path:
    """``case_0000.nii.gz`` with ``spacing`` (array axis order) and an identity direction."""
    path = folder / "case_0000.nii.gz"
    volume = sitk.GetImageFromArray(image)
    volume.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sitk.WriteImage(volume, str(path))
    return path


class TrainedLike(nn.Module):
    """A stand-in for trained weights: a random U-Net (all of the cost) plus a per-voxel intensity classifier whose
    logits dominate the U-Net's, so that the labels follow the organs as a trained network's would, and the small
    differences between the two pipelines' resampling move boundaries by a voxel instead of flipping labels at
    random."""

    def __init__(self, unet: nn.Module, means: Sequence[float], slope: float = 5.0, unet_scale: float = 0.2) -> None:
        super().__init__()
        self.unet, self.unet_scale = unet, unet_scale
        self.intensity = nn.Conv3d(1, len(means), 1)
        # Ranked by mean intensity, class r gets logit slope * sum_{k < r} (x - t_k) with t_k halfway between the
        # means of ranks k and k + 1: it wins exactly between thresholds r - 1 and r.
        order = sorted(range(len(means)), key=lambda c: means[c])
        thresholds = [(means[a] + means[b]) / 2 for a, b in zip(order[:-1], order[1:], strict=True)]
        offsets = torch.tensor([0.0, *thresholds]).cumsum(0)
        with torch.no_grad():
            for rank, c in enumerate(order):
                self.intensity.weight[c] = slope * rank
                self.intensity.bias[c] = -slope * offsets[rank]

    def forward(self, x: Tensor) -> Tensor:
        return self.unet_scale * self.unet(x) + self.intensity(x)


def make_network(image: np.ndarray, quick: bool) -> nn.Module:
    """The trained-like U-Net for ``image``, its class means in the units of the z-score both pipelines apply
    (mean and deviation over the nonzero box)."""
    from candy_unet.unet import make_unet3d
    box = image[tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(image))]
    mean, std = float(box.mean()), float(box.std())
    torch.manual_seed(0)
    unet = make_unet3d(1, NUM_CLASSES, hidden_chs=(8, 16, 32) if quick else (32, 64, 128, 256, 320))
    return TrainedLike(unet, [(m - mean) / std for m in INTENSITIES])


# --- ours ----------------------------------------------------------------------------------------------------------

def our_predictor(folder: Path, network: nn.Module, build: Callable[[], nn.Module], patch: Sequence[int],
                  target_spacing: Sequence[float], batch_size: int) -> Any:
    """A Predictor on an experiment folder holding ``network``'s weights and this case's plan; ``build`` makes the
    architecture the weights are loaded into."""
    from mipcandy import Predictor
    from mipcandy.data.preprocessing_plan import PreprocessingPlan
    from mipcandy.layer import save_weights
    from mipcandy.training.options import TrainingOptions
    from mipcandy.training.spec import ExperimentSpec

    class BenchmarkPredictor(Predictor):
        """The experiment's network is the benchmark's, not a bundle's."""

        def build_network(self, example_shape: Sequence[int]) -> nn.Module:
            return build()

    plan = PreprocessingPlan(normalization=("zscore",), intensity=(None,), target_spacing=tuple(target_spacing))
    spec = ExperimentSpec(experiment_id="benchmark", created="", trainer="benchmark", num_epochs=0,
                          options=TrainingOptions(num_classes=NUM_CLASSES, sliding_window_batch_size=batch_size),
                          example_shape=(1, *patch), num_classes=NUM_CLASSES, preprocessing_plan=plan)
    folder.mkdir(parents=True)
    spec.write(folder)
    save_weights(network, folder / "checkpoint_best.safetensors")
    return BenchmarkPredictor(folder)


def run_ours(predictor: Any, clock: ForwardClock, path: Path, out: Path) -> tuple[Stages, np.ndarray]:
    """Our stages one by one, as ``Predictor.predict_case`` chains them; ``clock`` times ``predictor.model``."""
    from mipcandy.data.io import save_image
    from mipcandy.data.postprocess import logits_to_probabilities
    from mipcandy.data.preprocessing_plan import preprocess_case
    from mipcandy.data.sliding_window import sliding_window_inference
    from mipcandy.inference.predictor import probabilities_to_labels, restore_probabilities

    stages = Stages()
    image, geometry = stages.run("read", lambda: predictor.cases(path)[0].load())
    data, _, properties = stages.run("preprocess", lambda: preprocess_case(image.float(), None, geometry,
                                                                           predictor.plan))
    stages.preprocessed_shape = tuple(data.shape[1:])
    clock.seconds = 0.0
    logits = stages.run("sliding window", lambda: sliding_window_inference(
        data, predictor.model, predictor.patch_size, overlap=predictor.overlap, batch_size=predictor.batch_size,
        num_classes=predictor.num_classes))
    stages.network = clock.seconds
    labels = stages.run("restore", lambda: probabilities_to_labels(
        restore_probabilities(logits_to_probabilities(logits), properties)))
    stages.run("write", lambda: save_image(labels, out, properties.geometry))
    return stages, labels[0].numpy()


def run_ours_end_to_end(predictor: Any, clock: ForwardClock, path: Path, folder: Path,
                        profile: bool) -> tuple[float, float, Path]:
    """``predict_to_files`` on the case: wall seconds, forward seconds, the written file."""
    clock.seconds = 0.0
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    (written,) = predictor.predict_to_files(path, folder, progress=False)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - start
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        print("\nours end to end, cProfile by own time (the network's forward passes are in torch's conv calls):")
        print("\n".join(text.getvalue().splitlines()[4:]))
    return wall, clock.seconds, written


# --- nnU-Net -------------------------------------------------------------------------------------------------------

def nnunet_plans(image: np.ndarray, patch: Sequence[int], target_spacing: Sequence[float]) -> dict[str, Any]:
    """A ``3d_fullres`` plan for this case, as nnU-Net's planner writes it (network settings are not used; the
    foreground intensities only matter to CT normalization)."""
    body = image[image != 0]
    intensities = {"mean": float(body.mean()), "median": float(np.median(body)), "std": float(body.std()),
                   "min": float(body.min()), "max": float(body.max()),
                   "percentile_00_5": float(np.percentile(body, 0.5)),
                   "percentile_99_5": float(np.percentile(body, 99.5))}
    shape = list(image.shape)
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset999_Benchmark", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": shape,
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensities},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": shape,
            "spacing": list(target_spacing), "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False], "batch_dice": True,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
            "architecture": {"network_class_name": "candy_unet.unet.UNet", "arch_kwargs": {},
                             "_kw_requires_import": []},
        }},
    }


def run_nnunet(network: nn.Module, clock: ForwardClock, path: Path, out: Path, image: np.ndarray,
               patch: Sequence[int], target_spacing: Sequence[float], threads: int) -> tuple[Stages, np.ndarray]:
    """nnU-Net's stages one by one, with ``network`` (its weights) as the trained model; ``clock`` times it."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "first": 1, "second": 2},
               "numTraining": 1, "file_ending": ".nii.gz"}
    plans = PlansManager(nnunet_plans(image, patch, target_spacing))
    configuration = plans.get_configuration("3d_fullres")
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [network.state_dict()], dataset, "benchmark",
                                    None)
    reader, stages = SimpleITKIO(), Stages()
    read, properties = stages.run("read", lambda: reader.read_images([str(path)]))
    data, _, properties = stages.run("preprocess", lambda: DefaultPreprocessor(verbose=False).run_case_npy(
        read, None, properties, plans, configuration, dataset))
    clock.seconds = 0.0
    logits = stages.run("sliding window", lambda: predictor.predict_logits_from_preprocessed_data(
        torch.from_numpy(data)))
    stages.network = clock.seconds
    labels = stages.run("restore", lambda: convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, plans, configuration, predictor.label_manager, properties, num_threads_torch=threads))
    stages.run("write", lambda: reader.write_seg(labels, str(out), properties))
    return stages, labels


# --- reporting -----------------------------------------------------------------------------------------------------

def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum()) + int(y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def print_stages(results: dict[str, Stages]) -> None:
    names = list(next(iter(results.values())).seconds)
    print(f"  {'stage':26s}" + "".join(f"{name:>12s}" for name in results) + f"{'ours/peer':>11s}")
    rows = [(name, [r.seconds[name] for r in results.values()]) for name in names]
    rows.insert(names.index("sliding window") + 1,
                ("  of which forward passes", [r.network for r in results.values()]))
    rows += [("total", [r.total for r in results.values()]), ("outside the network", [r.outside for r in
                                                                                        results.values()])]
    for name, values in rows:
        ratio = f"{values[0] / values[1]:11.3f}" if len(values) == 2 and values[1] > 0 else ""
        print(f"  {name:26s}" + "".join(f"{v:11.3f}s" for v in values) + ratio)
    for label, r in results.items():
        print(f"  {label}: {r.outside / r.total:.1%} of the time outside the network's forward passes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 230, 190), help="voxels at 1 mm (D H W)")
    parser.add_argument("--target-spacing", type=float, default=2.0, help="the training spacing (mm, isotropic)")
    parser.add_argument("--patch", type=int, default=64, help="edge of the cubic sliding window")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward (ours; nnU-Net runs 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-dice", type=float, default=0.95, help="per foreground class, ours vs nnU-Net")
    parser.add_argument("--profile", action="store_true", help="cProfile our end-to-end run")
    parser.add_argument("--quick", action="store_true", help="small case, narrow network, 32^3 patch")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("nnunetv2") is None:
        print("nnunetv2 is not importable; install the bench extra (pip install -e .[bench])", file=sys.stderr)
        return 2
    from mipcandy.data.sliding_window import window_slices

    torch.set_num_threads(args.threads)
    shape = (80, 88, 72) if args.quick else tuple(args.shape)
    patch = (32 if args.quick else args.patch,) * 3
    target = (args.target_spacing,) * 3
    image, truth = synthetic_volume(shape)
    network = make_network(image, args.quick).eval()
    peer_clock = ForwardClock(network)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write_case(root, image, (1.0, 1.0, 1.0))
        predictor = our_predictor(root / "experiment", network, lambda: make_network(image, args.quick), patch,
                                  target, args.batch_size)
        our_clock = ForwardClock(predictor.model)
        ours, our_labels = run_ours(predictor, our_clock, path, root / "ours.nii.gz")
        padded = [max(n, p) for n, p in zip(ours.preprocessed_shape, patch, strict=True)]  # as the windows see it
        print(f"case {'x'.join(map(str, shape))} voxels at 1 mm, cropped and resampled to {args.target_spacing} mm: "
              f"{'x'.join(map(str, ours.preprocessed_shape))}, {len(window_slices(padded, patch))} "
              f"windows of {patch[0]}^3; {args.threads} threads")
        peer, peer_labels = run_nnunet(network, peer_clock, path, root / "nnunet.nii.gz", image, patch, target,
                                       args.threads)
        dices = [dice(our_labels, peer_labels, label) for label in range(1, NUM_CLASSES)]
        agree = min(dices) >= args.min_dice
        print(f"Dice ours vs nnU-Net per foreground class: {', '.join(f'{d:.4f}' for d in dices)} (minimum "
              f"{args.min_dice}); voxels equal: {float((our_labels == peer_labels).mean()):.4%}")
        for name, labels in (("ours", our_labels), ("nnU-Net", peer_labels)):
            against = ", ".join(f"{dice(labels, truth, label):.4f}" for label in range(1, NUM_CLASSES))
            print(f"  Dice against the synthetic truth, {name}: {against}")
        print(f"\nstages (wall), batch {args.batch_size} windows per forward for ours, 1 for nnU-Net:")
        print_stages({"ours": ours, "nnU-Net": peer})
        wall, forward, written = run_ours_end_to_end(predictor, our_clock, path, root / "end_to_end", args.profile)
        same = np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written))), our_labels)
        print(f"\nours end to end (Predictor.predict_to_files): {wall:.3f} s, forward passes {forward:.3f} s, "
              f"{(wall - forward) / wall:.1%} outside the network (goal <= {GOAL:.0%}); labels equal the staged "
              f"run: {same}")
    return 0 if agree and same else 1


if __name__ == "__main__":
    sys.exit(main())
