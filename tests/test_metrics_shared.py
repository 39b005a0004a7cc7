"""SharedSurfaceMetrics: the values of separate hd95/assd/nsd calls, from one distance computation."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from mipcandy.evaluation import Evaluator
from mipcandy.metrics import SharedSurfaceMetrics, assd, dice_similarity_coefficient, hd95, nsd
from mipcandy.metrics import surface as surface_module


def blobs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A label map with two overlapping random boxes (classes 1 and 2) and a little speckle."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(shape, dtype=torch.long)
    for class_id in (1, 2):
        start = [int(torch.randint(1, n // 2, (1,), generator=generator)) for n in shape]
        stop = [s + int(torch.randint(2, n // 2, (1,), generator=generator)) for s, n in zip(start, shape, strict=True)]
        labels[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = class_id
    speckle = torch.rand(shape, generator=generator) < 0.01
    labels[speckle] = torch.randint(0, 3, (int(speckle.sum()),), generator=generator)
    return labels


METRICS = [
    hd95,
    assd,
    partial(nsd, tolerance=1.5),
    partial(hd95, percentile=100.0, spacing=(2.0, 1.0, 1.0)),  # its own spacing: a group of its own without one
    partial(partial(nsd, tolerance=9.0, if_empty=0.5), tolerance=0.8),  # the outer partial wins
    partial(assd, reduction="sum", if_empty=math.nan),
]
PER_CLASS = partial(nsd, tolerance=[1.0, 2.0], reduction="median")  # label maps with two classes only


@pytest.mark.parametrize("spacing", [None, (1.5, 0.7, 0.9)])
def test_values_equal_separate_calls(spacing: tuple[float, ...] | None) -> None:
    labels = blobs((14, 16, 12), seed=1)
    outputs = blobs((14, 16, 12), seed=2)
    extra = {} if spacing is None else {"spacing": spacing}
    # label maps with two classes (reductions over both), the masks of one class, and two empty masks
    for pred, ref, metrics in ((outputs, labels, [*METRICS, PER_CLASS]), (outputs == 2, labels == 2, METRICS),
                               (labels < 0, labels < 0, METRICS)):
        expected = [float(fn(pred, ref, spatial_dims=3, **extra)) for fn in metrics]
        got = SharedSurfaceMetrics(metrics)(pred, ref, spacing=spacing, spatial_dims=3)
        assert len(got) == len(metrics)
        for fn, a, b in zip(metrics, got, expected, strict=True):
            assert a == b or (math.isnan(a) and math.isnan(b)), fn


def test_one_distance_computation_per_case_and_class(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = surface_module.surface_distances

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(surface_module, "surface_distances", counted)
    labels, outputs = blobs((10, 12, 9), seed=3), blobs((10, 12, 9), seed=4)
    SharedSurfaceMetrics([hd95, assd, partial(nsd, tolerance=1.0)])(outputs == 1, labels == 1, spatial_dims=3)
    assert len(calls) == 1
    calls.clear()
    metrics = [dice_similarity_coefficient, hd95, assd, ("nsd", partial(nsd, tolerance=1.0))]
    Evaluator(*metrics, progress=False).evaluate([outputs[None]] * 2, [labels[None]] * 2, spacing=(2.0, 1.0, 1.0))
    assert len(calls) == 2 * 2  # (case, class) pairs, not times three metrics


def test_refuses_what_it_cannot_share() -> None:
    assert not SharedSurfaceMetrics.supports(dice_similarity_coefficient)
    assert not SharedSurfaceMetrics.supports(partial(hd95, torch.zeros(3)))  # positional arguments
    assert SharedSurfaceMetrics.supports(partial(nsd, tolerance=1.0))
    with pytest.raises(TypeError, match="hd95, assd and nsd"):
        SharedSurfaceMetrics([hd95, dice_similarity_coefficient])
    with pytest.raises(TypeError, match="tolerance"):
        SharedSurfaceMetrics([nsd])  # as nsd(outputs, labels) would fail
    with pytest.raises(TypeError, match="percentil"):
        SharedSurfaceMetrics([partial(hd95, percentil=90)])
    with pytest.raises(ValueError, match="reduction"):
        SharedSurfaceMetrics([partial(assd, reduction="max")])
    labels = blobs((8, 8, 8), seed=5)
    with pytest.raises(ValueError, match="one number"):
        SharedSurfaceMetrics([partial(hd95, reduction="none")])(labels, labels, spatial_dims=3)
