"""Surface metrics: agreement with MONAI and with a brute-force reference, ties, empties, layouts, files, errors."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from mipcandy.metrics import assd, hd95, nsd, surface_metrics


def ellipsoids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Label map with two random, possibly overlapping ellipsoids (2D: ellipses) as classes 1 and 2."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    labels = torch.zeros(shape, dtype=torch.long)
    sizes = torch.tensor(shape, dtype=torch.float32).view(-1, *([1] * len(shape)))
    for class_id in (1, 2):
        center = (0.25 + 0.5 * torch.rand(len(shape), 1, generator=generator)).view_as(sizes) * sizes
        radius = (0.12 + 0.15 * torch.rand(len(shape), 1, generator=generator)).view_as(sizes) * sizes
        labels[(((grid - center) / radius) ** 2).sum(0) <= 1] = class_id
    return labels


def perturb(labels: torch.Tensor, kind: str) -> torch.Tensor:
    """A prediction: another random map, or the label map shifted (zero fill), eroded or dilated per class."""
    if kind == "random":
        return ellipsoids(tuple(labels.shape), seed=1234)
    if kind == "shifted":
        shifted = torch.zeros_like(labels)
        shifted[(slice(2, None),) + (slice(1, None),) * (labels.ndim - 1)] = labels[
            (slice(None, -2),) + (slice(None, -1),) * (labels.ndim - 1)]
        return shifted
    pool = F.max_pool3d if labels.ndim == 3 else F.max_pool2d
    stack = F.one_hot(labels, 3).movedim(-1, 0)[1:].float()[None]
    stack = pool(stack, 3, 1, 1) if kind == "dilated" else -pool(-stack, 3, 1, 1)
    return (stack[0] * torch.tensor([1.0, 2.0]).view(-1, *([1] * labels.ndim))).amax(0).long()


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """(B, 1, *spatial) ids -> (B, 3, *spatial) float one-hot."""
    return F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()


def monai_surface(outputs: torch.Tensor, labels: torch.Tensor, spacing, tolerance, percentile=95.0):
    """MONAI's HD (percentile; None: maximum), symmetric ASSD and NSD on foreground classes of label maps."""
    metrics = pytest.importorskip("monai.metrics")
    hot_out, hot_lab = one_hot(outputs), one_hot(labels)
    tolerances = list(tolerance) if isinstance(tolerance, list | tuple) else [tolerance] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd95": metrics.compute_hausdorff_distance(hot_out, hot_lab, percentile=percentile, spacing=spacing),
            "assd": metrics.compute_average_surface_distance(hot_out, hot_lab, symmetric=True, spacing=spacing),
            "nsd": metrics.compute_surface_dice(hot_out, hot_lab, tolerances, spacing=spacing),
        }


SETTINGS = [
    ((32, 32, 32), (1.0, 1.0, 1.0), 2.0),
    ((32, 32, 32), (3.0, 0.8, 0.8), 1.6),
    ((48, 40), (1.0, 1.0), 2.0),
    ((48, 40), (2.0, 0.7), 1.4),
]


@pytest.mark.parametrize("kind", ["random", "shifted", "eroded", "dilated"])
@pytest.mark.parametrize(("shape", "spacing", "tolerance"), SETTINGS)
def test_surface_metrics_agree_with_monai(kind: str, shape, spacing, tolerance) -> None:
    labels = torch.stack([ellipsoids(shape, seed) for seed in (1, 2)])[:, None]
    outputs = torch.stack([perturb(case[0], kind) for case in labels])[:, None]
    expected = monai_surface(outputs, labels, spacing, tolerance)
    ours = surface_metrics(outputs, labels, tolerance=tolerance, spacing=spacing, reduction="none")
    for name in ("hd95", "assd", "nsd"):
        assert ours[name].shape == (2, 2)
        torch.testing.assert_close(ours[name], expected[name], atol=1e-4, rtol=0, msg=name)
    assert (ours["hd95"] > 0).all()  # the perturbation really moved every surface


def test_single_metrics_equal_the_combined_call() -> None:
    labels = torch.stack([ellipsoids((24, 28, 20), seed) for seed in (5, 6)])[:, None]
    outputs = torch.stack([perturb(case[0], "shifted") for case in labels])[:, None]
    spacing = (2.5, 0.75, 0.75)
    combined = surface_metrics(outputs, labels, tolerance=1.5, spacing=spacing, reduction="none")
    torch.testing.assert_close(hd95(outputs, labels, spacing=spacing, reduction="none"), combined["hd95"])
    torch.testing.assert_close(assd(outputs, labels, spacing=spacing, reduction="none"), combined["assd"])
    torch.testing.assert_close(nsd(outputs, labels, tolerance=1.5, spacing=spacing, reduction="none"), combined["nsd"])


def test_nsd_is_exact_at_tolerance_ties() -> None:
    """Tolerances equal to grid distances: every boundary voxel on the tie must be decided as MONAI does."""
    labels = torch.stack([ellipsoids((16, 28, 28), seed) for seed in (3, 4)])[:, None]
    outputs = torch.stack([perturb(case[0], "shifted") for case in labels])[:, None]
    spacing = (3.0, 0.8, 0.8)
    for tolerance in (0.0, 0.8, 1.6, 3.0, math.hypot(3.0, 0.8), math.hypot(3.0, 1.6, 0.8)):
        expected = monai_surface(outputs, labels, spacing, tolerance)["nsd"]
        ours = nsd(outputs, labels, tolerance=tolerance, spacing=spacing, reduction="none")
        torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0, msg=f"tolerance {tolerance}")


def test_per_class_tolerance_and_other_percentiles() -> None:
    labels = ellipsoids((24, 24, 24), 7)[None, None]
    outputs = perturb(labels[0, 0], "dilated")[None, None]
    spacing = (1.5, 1.0, 0.5)
    expected = monai_surface(outputs, labels, spacing, [1.0, 2.0])["nsd"]
    torch.testing.assert_close(nsd(outputs, labels, tolerance=[1.0, 2.0], spacing=spacing, reduction="none"),
                               expected, atol=1e-6, rtol=0)
    for percentile in (100.0, 50.0):
        reference = monai_surface(outputs, labels, spacing, 1.0, percentile=percentile)["hd95"]
        ours = hd95(outputs, labels, spacing=spacing, percentile=percentile, reduction="none")
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)


def test_thin_border_touching_and_single_voxel_structures() -> None:
    shape = (10, 12, 14)
    outputs, labels = torch.zeros(4, 1, *shape, dtype=torch.long), torch.zeros(4, 1, *shape, dtype=torch.long)
    outputs[0, 0, 4, 2:9, 3:10], labels[0, 0, 5, 3:9, 3:11] = 1, 1  # one-slice plates
    outputs[3, 0, 4, 2:9, 3:10], labels[3, 0, 4, 3:9, 3:11] = 1, 1  # in one slice: a one-voxel-thick box
    outputs[1, 0, :6, :, 3:12], labels[1, 0, :7, :11, 2:12] = 1, 1  # touching the array border
    outputs[2, 0, 4, 2, 3], labels[2, 0, 7, 9, 3] = 1, 1  # single voxels
    outputs[:, 0, 0, 0, 0], labels[:, 0, -1, -1, -1] = 2, 2  # corner voxels far apart
    spacing = (3.0, 0.8, 0.8)
    expected = monai_surface(outputs, labels, spacing, 3.0)
    ours = surface_metrics(outputs, labels, tolerance=3.0, spacing=spacing, reduction="none")
    for name in ("hd95", "assd", "nsd"):
        torch.testing.assert_close(ours[name], expected[name], atol=1e-4, rtol=0, msg=name)


def brute_force(pred: torch.Tensor, label: torch.Tensor, spacing: tuple[float, ...], tolerance: float):
    """Independent reference: boundary by explicit face-neighbour tests, distances by all pairs (float64)."""

    def edges(mask: torch.Tensor) -> torch.Tensor:
        padded = F.pad(mask.double()[None, None], (1, 1) * mask.ndim)[0, 0]
        interior = torch.ones_like(mask)
        for axis in range(mask.ndim):
            for step in (-1, 1):
                interior &= padded.roll(step, axis)[(slice(1, -1),) * mask.ndim] > 0
        return mask & ~interior

    scale = torch.tensor(spacing, dtype=torch.float64)
    points = [edges(m).nonzero().double() * scale for m in (pred, label)]
    pairwise = torch.cdist(points[0], points[1])
    forward, backward = pairwise.amin(1), pairwise.amin(0)
    hd = max(torch.quantile(forward, 0.95), torch.quantile(backward, 0.95))
    both = torch.cat([forward, backward])
    return float(hd), float(both.mean()), float((both <= tolerance).double().mean())


@pytest.mark.parametrize("shape", [(40, 36), (14, 16, 18)])
def test_agrees_with_a_brute_force_reference(shape: tuple[int, ...]) -> None:
    spacing = (2.0, 0.7, 0.6)[-len(shape):]
    for seed in (11, 12):
        labels = ellipsoids(shape, seed)
        outputs = perturb(labels, "random" if seed == 11 else "dilated")
        ours = surface_metrics(outputs, labels, tolerance=1.3, spacing=spacing, include_background=True,
                               num_classes=3, reduction="none")
        for column, class_id in enumerate((0, 1, 2)):
            expected = brute_force(outputs == class_id, labels == class_id, spacing, 1.3)
            got = [ours[name][column].item() for name in ("hd95", "assd", "nsd")]
            assert got == pytest.approx(expected, abs=1e-4), f"class {class_id}"


def test_empty_rules() -> None:
    shape = (12, 12, 12)
    present = torch.zeros(shape, dtype=torch.bool)
    present[3:8, 4:9, 2:7] = True
    empty = torch.zeros(shape, dtype=torch.bool)
    spacing = (2.0, 1.0, 1.0)
    both = surface_metrics(empty, empty, tolerance=1.0, spacing=spacing)
    assert [both[k].item() for k in ("hd95", "assd", "nsd")] == [0.0, 0.0, 1.0]
    ignored = surface_metrics(empty, empty, tolerance=1.0, spacing=spacing, if_empty=math.nan)
    assert all(value.isnan() for value in ignored.values())
    for pred, label in ((empty, present), (present, empty)):
        one = surface_metrics(pred, label, tolerance=1.0, spacing=spacing)
        assert [one[k].item() for k in ("hd95", "assd", "nsd")] == [math.inf, math.inf, 0.0]
        assert hd95(pred, label, spacing=spacing, percentile=100).item() == math.inf
    # NaN-and-ignore: an absent class drops out of the mean instead of pulling it to 0 or 1
    labels = torch.stack([present, empty]).long()[:, None]
    outputs = torch.stack([present.roll(1, 0), empty]).long()[:, None]
    per_case = assd(outputs, labels, spacing=spacing, if_empty=math.nan, reduction="none")
    assert per_case[1].isnan().all() and per_case[0].isfinite().all()
    assert assd(outputs, labels, spacing=spacing, if_empty=math.nan).item() == pytest.approx(per_case[0, 0].item())
    assert assd(outputs, labels, spacing=spacing, reduction="median").item() == pytest.approx(
        per_case[0, 0].item() / 2)


def test_one_sided_cases_match_monai_where_it_defines_a_value() -> None:
    labels = ellipsoids((20, 20, 20), 8)[None, None]
    outputs = labels.clone()
    outputs[outputs == 2] = 0  # class 2 missing from the prediction
    expected = monai_surface(outputs, labels, (1.0, 1.0, 1.0), 1.0, percentile=None)
    ours = surface_metrics(outputs, labels, tolerance=1.0, spacing=1.0, spatial_dims=3, reduction="none")
    torch.testing.assert_close(ours["assd"], expected["assd"])
    torch.testing.assert_close(ours["nsd"], expected["nsd"])
    assert ours["hd95"][0, 1] == math.inf  # MONAI's HD95 (any percentile) is NaN here, its maximum inf
    torch.testing.assert_close(hd95(outputs, labels, spacing=1.0, spatial_dims=3, percentile=100, reduction="none"),
                               expected["hd95"])


def test_layouts_and_mask_types_give_the_same_values() -> None:
    spacing = (1.5, 0.9, 0.6)
    labels = torch.stack([ellipsoids((16, 20, 24), seed) for seed in (9, 10)])[:, None]
    outputs = torch.stack([perturb(case[0], "dilated") for case in labels])[:, None]
    batched = hd95(outputs, labels, spacing=spacing, reduction="none")
    for case in range(2):
        torch.testing.assert_close(hd95(outputs[case], labels[case], spacing=spacing, reduction="none"),
                                   batched[case])
        for column, class_id in enumerate((1, 2)):
            pred, label = outputs[case, 0] == class_id, labels[case, 0] == class_id
            single = hd95(pred, label, spacing=spacing, reduction="none")
            torch.testing.assert_close(single, batched[case, column : column + 1])
    hot_out, hot_lab = one_hot(outputs)[:, 1:], one_hot(labels)[:, 1:]
    torch.testing.assert_close(hd95(hot_out, hot_lab, spacing=spacing, reduction="none"), batched)
    torch.testing.assert_close(hd95(hot_out.bool(), hot_lab.bool(), spacing=spacing, reduction="none"), batched)
    in_voxels = hd95(outputs, labels, reduction="none")  # no spacing: distances in voxels
    torch.testing.assert_close(in_voxels, hd95(outputs, labels, spacing=1.0, reduction="none"))
    assert not torch.allclose(in_voxels, batched)  # the anisotropic spacing is really used


def test_spacing_read_from_files_through_simpleitk(tmp_path: Path) -> None:
    """Spacing comes from SimpleITK in (x, y, z) order; the metrics take it in tensor (z, y, x) order."""
    labels = ellipsoids((12, 30, 26), 13)
    outputs = perturb(labels, "shifted")
    for name, volume in (("label", labels), ("prediction", outputs)):
        image = sitk.GetImageFromArray(volume.to(torch.uint8).numpy())
        image.SetSpacing((0.7, 0.9, 3.5))
        sitk.WriteImage(image, str(tmp_path / f"{name}.nii.gz"))
    read = {name: sitk.ReadImage(str(tmp_path / f"{name}.nii.gz")) for name in ("label", "prediction")}
    spacing = tuple(reversed(read["label"].GetSpacing()))
    as_tensor = {name: torch.from_numpy(sitk.GetArrayFromImage(image)).long() for name, image in read.items()}
    ours = surface_metrics(as_tensor["prediction"], as_tensor["label"], tolerance=2.0, spacing=spacing,
                           reduction="none")
    expected = monai_surface(outputs[None, None], labels[None, None], (3.5, 0.9, 0.7), 2.0)
    for name in ("hd95", "assd", "nsd"):
        torch.testing.assert_close(ours[name], expected[name][0], atol=1e-4, rtol=0, msg=name)


def test_torch_thread_setting_is_restored_even_on_errors() -> None:
    threads = torch.get_num_threads()
    mask = torch.zeros(8, 8, 8)
    mask[2:5, 2:5, 2:5] = 1
    surface_metrics(mask, mask.roll(1, 0), tolerance=1.0, spacing=(2.0, 1.0, 1.0))
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="threshold probabilities"):
        hd95(mask * 0.5, mask, spacing=(2.0, 1.0, 1.0))
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_give_cuda_results_equal_to_cpu() -> None:
    labels = torch.stack([ellipsoids((24, 24, 24), seed) for seed in (1, 2)])[:, None]
    outputs = torch.stack([perturb(case[0], "eroded") for case in labels])[:, None]
    on_cpu = surface_metrics(outputs, labels, tolerance=1.0, spacing=(2.0, 1.0, 1.0), reduction="none")
    on_gpu = surface_metrics(outputs.cuda(), labels.cuda(), tolerance=1.0, spacing=(2.0, 1.0, 1.0), reduction="none")
    for name, values in on_gpu.items():
        assert values.device.type == "cuda"
        torch.testing.assert_close(values.cpu(), on_cpu[name])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: hd95(m, m, spacing=(1.0, 1.0), spatial_dims=3), "has 2 values but the data is 3D"),
        (lambda m: hd95(m[0, 0], m[0, 0], spacing=(1.0, 1.0, 1.0)), r"got shape \(6, 7\)"),
        (lambda m: hd95(m, m, spacing=(1.0, -1.0, 1.0)), "positive and finite"),
        (lambda m: nsd(m, m, spacing=(1.0, 1.0, 1.0), tolerance=-1.0), "tolerance"),
        (lambda m: nsd(m, m, spacing=(1.0, 1.0, 1.0), tolerance=[1.0, 2.0]), "one per class"),
        (lambda m: hd95(m, m, spacing=(1.0, 1.0, 1.0), percentile=120), "percentile"),
        (lambda m: assd(m.float() * 0.5, m.float(), spacing=(1.0, 1.0, 1.0)), "threshold probabilities"),
        (lambda m: assd(m, m), "ambiguous"),
        (lambda m: assd(m, m, spacing=1.0), "ambiguous"),
        (lambda m: assd(m, m, spacing=(1.0, 1.0, 1.0), reduction="max"), "reduction"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message: str) -> None:
    mask = torch.zeros(3, 5, 6, 7, dtype=torch.bool)
    mask[:, 1:4, 2:5, 2:6] = True
    with pytest.raises(ValueError, match=message):
        call(mask)
