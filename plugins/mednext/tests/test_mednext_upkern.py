"""UpKern: a kernel-5 MedNeXt initialised from a kernel-3 one by interpolating the depthwise kernels."""
from __future__ import annotations

import pytest
import torch

from candy_mednext.mednext import make_mednext2d, make_mednext3d
from candy_mednext.upkern import upkern

TINY = {"base_ch": 4, "exp_r": 2, "block_counts": 1}


def linear_3_to_5(values: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of 3 taps onto 5 (half-pixel centres, edges clamped), by hand: the 5 taps sample the
    3-tap kernel at 0, 0.4, 1, 1.6 and 2."""
    a, b, c = values
    return torch.stack([a, 0.6 * a + 0.4 * b, b, 0.4 * b + 0.6 * c, c])


@pytest.mark.parametrize("ndim", [2, 3])
def test_upkern_copies_equal_shapes_and_interpolates_kernels(ndim) -> None:
    builder = make_mednext2d if ndim == 2 else make_mednext3d
    torch.manual_seed(0)
    small, large = builder(2, 3, kernel_size=3, **TINY), builder(2, 3, kernel_size=5, **TINY)
    # give one depthwise kernel a separable pattern whose interpolation is known by hand
    axes = [torch.tensor([1.0, 2.0, 4.0]), torch.tensor([-1.0, 0.5, 3.0]), torch.tensor([2.0, 0.0, 1.0])][:ndim]
    pattern = axes[0]
    for axis in axes[1:]:
        pattern = pattern[..., None] * axis
    with torch.no_grad():
        small.encoder[0][0].depthwise.weight[0, 0] = pattern
    assert upkern(large, small) is large
    source, target = small.state_dict(), large.state_dict()
    resized = [key for key in target if target[key].shape != source[key].shape]
    assert resized and all(key.endswith("depthwise.weight") for key in resized)
    for key in set(target) - set(resized):
        assert torch.equal(target[key], source[key]), key
    for key in resized:
        assert target[key].shape[2:] == (5,) * ndim and target[key].shape[:2] == source[key].shape[:2]
        centre = (slice(None), slice(None), *(slice(0, 5, 2),) * ndim)  # taps 0, 2, 4 sit on the 3-tap grid
        torch.testing.assert_close(target[key][centre], source[key])
    expected = linear_3_to_5(axes[0])
    for axis in axes[1:]:
        expected = expected[..., None] * linear_3_to_5(axis)  # (bi/tri)linear = product of 1D interpolations
    torch.testing.assert_close(large.encoder[0][0].depthwise.weight[0, 0], expected)


def test_upkern_refuses_networks_that_differ_in_more_than_kernels() -> None:
    with pytest.raises(ValueError, match=r"exist in only one of them"):
        upkern(make_mednext3d(1, 2, kernel_size=5, **TINY), make_mednext3d(1, 2, **{**TINY, "block_counts": 2}))
    with pytest.raises(ValueError, match=r"stem.weight is \(4, 1, 1, 1, 1\) in the source but \(8, 1, 1, 1, 1\)"):
        upkern(make_mednext3d(1, 2, kernel_size=5, **{**TINY, "base_ch": 8}), make_mednext3d(1, 2, **TINY))
