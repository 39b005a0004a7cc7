"""Batched nnU-Net augmentation: geometry against torch references, label/image alignment, draw frequencies,
parameter ranges, reproducibility, dtypes/devices and seeding in DataLoader workers."""
from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mipcandy.data.augment import (
    AugmentingCollate,
    Compose,
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    Mirror,
    MultiplicativeBrightness,
    NNUNetAugmentation,
    SimulateLowResolution,
    SpatialTransform,
    affine_grid,
    gaussian_blur,
    rotation_matrices,
)
from mipcandy.data.augment import spatial as spatial_module

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
NO_INTENSITY = dict(p_noise=0, p_blur=0, p_brightness=0, p_contrast=0, p_low_resolution=0, p_gamma_inverted=0,
                    p_gamma=0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(batch: int, shape: tuple[int, ...], seed: int = 0, num_classes: int = 3) -> torch.Tensor:
    """Smooth random label maps (B, 1, *shape) with ids 0..num_classes-1 in large connected regions."""
    g = gen(seed)
    coarse = torch.rand((batch, num_classes, *[max(2, s // 6) for s in shape]), generator=g)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    smooth = F.interpolate(coarse, size=shape, mode=mode, align_corners=False)
    return smooth.argmax(dim=1, keepdim=True)


def onehot_image(label: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    return torch.zeros((label.shape[0], num_classes, *label.shape[2:])).scatter_(1, label, 1.0)


def changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per-row flag: row differs anywhere (rows are the first axis)."""
    return (before != after).flatten(1).any(dim=1)


def assert_frequency(flags: torch.Tensor, p: float) -> None:
    """Binomial frequency within 4.5 standard errors (plus slack for tiny p): a 20% error in p fails."""
    n = flags.numel()
    freq = flags.float().mean().item()
    bound = 4.5 * math.sqrt(p * (1 - p) / n) + 0.002
    assert abs(freq - p) < bound, f"frequency {freq:.4f}, expected {p:.4f} +- {bound:.4f}"


# ---------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("size", [(5, 6), (5, 6, 7)])
def test_affine_grid_matches_torch(size: tuple[int, ...]) -> None:
    ndim = len(size)
    theta = torch.randn(3, ndim, ndim + 1, generator=gen(1), dtype=torch.float64)
    expected = F.affine_grid(theta, (3, 1, *size), align_corners=False)
    assert torch.allclose(affine_grid(theta, size), expected, atol=1e-12)


@pytest.mark.parametrize("depth", [8, 7])
def test_threaded_grid_sample_is_bit_identical(depth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spatial_module.torch, "get_num_threads", lambda: 4)
    x = torch.randn(1, 2, depth, 6, 5, generator=gen(2))
    theta = torch.tensor([[[0.9, 0.2, 0.0, 0.1], [-0.2, 0.9, 0.1, 0.0], [0.0, -0.1, 1.1, 0.05]]])
    grid = affine_grid(theta, (depth, 6, 5))
    for mode in ("bilinear", "nearest"):
        expected = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
        assert torch.equal(spatial_module.grid_sample(x, grid, mode), expected)


def test_rotation_by_90_degrees_is_rot90() -> None:
    image = torch.randn(1, 1, 9, 9, generator=gen(3))
    out, _ = SpatialTransform(1.0, (90.0, 90.0), 0.0)(image.clone(), None, gen())
    candidates = [torch.rot90(image, k, dims=(2, 3)) for k in (1, 3)]
    assert any(torch.allclose(out, c, atol=1e-5) for c in candidates)


@pytest.mark.parametrize("ndim", [2, 3])
def test_scaling_multiplies_the_sampling_step(ndim: int) -> None:
    """On a linear ramp, bilinear sampling is exact: the output slope is the scale factor (larger = zoom out)."""
    size = (16,) * ndim
    ramp = torch.arange(16, dtype=torch.float64).view(*[1] * (ndim - 1), 16).expand(*size)
    image = ramp[None, None].clone()
    out, _ = SpatialTransform(0.0, None, 1.0, (1.25, 1.25))(image.clone(), None, gen())
    centre = (slice(None), slice(None), *[slice(6, 10)] * ndim)
    slope = out[centre].diff(dim=-1)
    assert torch.allclose(slope, torch.full_like(slope, 1.25), atol=1e-6)


def test_rotation_and_scaling_ranges() -> None:
    """On a ramp along x, the output gradient at the centre is s * R^T e_x: its length is the scale, its angle the
    rotation, so both drawn ranges can be read back."""
    ramp = torch.arange(24, dtype=torch.float64).expand(24, 24)
    image = ramp[None, None].repeat(400, 1, 1, 1)
    out, _ = SpatialTransform(1.0, (-30.0, 30.0), 1.0, (0.7, 1.4))(image.clone(), None, gen(30))
    centre = out[:, 0, 10:14, 10:14]
    gx, gy = centre.diff(dim=2).mean(dim=(1, 2)), centre.diff(dim=1).mean(dim=(1, 2))
    scale, angle = torch.hypot(gx, gy), torch.rad2deg(torch.atan2(gy, gx)).abs()
    assert scale.min() >= 0.7 - 1e-6 and scale.max() <= 1.4 + 1e-6 and scale.max() - scale.min() > 0.6
    assert angle.max() <= 30 + 1e-6 and angle.max() > 27


@pytest.mark.parametrize("size,patch", [((12, 12), (8, 8)), ((9, 10), (6, 7)), ((9, 8, 7), (6, 5, 4))])
def test_patch_size_crops_consistently(size: tuple[int, ...], patch: tuple[int, ...]) -> None:
    """A drawn-but-identity transform equals the integer centre crop used for undrawn samples."""
    image = torch.randn(2, 1, *size, generator=gen(4))
    label = blobs(2, size)
    identity = SpatialTransform(1.0, (0.0, 0.0), 1.0, (1.0, 1.0), patch_size=patch)
    skipped = SpatialTransform(0.0, None, 0.0, patch_size=patch)
    drawn_image, drawn_label = identity(image.clone(), label.clone(), gen())
    kept_image, kept_label = skipped(image.clone(), label.clone(), gen())
    starts = [s // 2 - p // 2 for s, p in zip(size, patch, strict=True)]
    crop = (..., *(slice(s, s + p) for s, p in zip(starts, patch, strict=True)))
    assert torch.equal(kept_image, image[crop]) and torch.equal(kept_label, label[crop])
    assert torch.allclose(drawn_image, image[crop], atol=1e-5)
    assert torch.equal(drawn_label, label[crop])


def test_patch_size_larger_than_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        SpatialTransform(patch_size=(9, 9))(torch.zeros(1, 1, 8, 8), None, gen())


# ---------------------------------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("shape", [(40, 40), (20, 20, 20)])
@pytest.mark.parametrize("label_mode", ["nearest", "onehot"])
def test_label_stays_aligned_with_image(shape: tuple[int, ...], label_mode: str) -> None:
    """Image channels are the label's one-hot: wherever a channel stays exactly 1, the label must be that class."""
    label = blobs(6, shape, seed=5)
    image = onehot_image(label)
    augment = NNUNetAugmentation(len(shape), p_rotation=1, p_scaling=1, p_mirror=0.5, label_mode=label_mode,
                                 **NO_INTENSITY)
    out_image, out_label = augment(image, label, gen(6))
    assert out_label.dtype == label.dtype and set(out_label.unique().tolist()) <= {0, 1, 2}
    certain = out_image.max(dim=1).values > 1 - 1e-4
    assert certain.float().mean() > 0.3, "too few unambiguous voxels for a meaningful check"
    assert torch.equal(out_label[:, 0][certain], out_image.argmax(dim=1)[certain])
    if label_mode == "onehot":  # the label is the argmax of exactly these resampled channels
        inside = out_image.max(dim=1).values > 0.5
        assert torch.equal(out_label[:, 0][inside], out_image.argmax(dim=1)[inside])
    for k in (1, 2):  # nearest and linear boundaries differ by < 1 voxel: Dice ~0.95 (a 1-voxel shift gives ~0.85)
        predicted, truth = out_image.argmax(dim=1) == k, out_label[:, 0] == k
        dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
        assert dice > 0.92


def test_dummy_2d_keeps_slices_apart() -> None:
    """Dummy 2D rotates and scales in the (H, W) plane only, so slice d only receives values from slice d
    (the centre stays inside the plane for any rotation and scaling <= 1.4, away from zero padding)."""
    depth = 4
    image = torch.arange(1, depth + 1, dtype=torch.float32).view(1, 1, depth, 1, 1).expand(3, 1, depth, 16, 16)
    augment = NNUNetAugmentation.for_patch_size((depth, 16, 16), p_rotation=1, p_scaling=1, p_mirror=0,
                                                **NO_INTENSITY)
    spatial = augment.transforms[0]
    assert isinstance(spatial, SpatialTransform) and spatial.axes == (1, 2)
    out, _ = augment(image.contiguous(), None, gen(7))
    assert changed(image, out).all()
    for d in range(depth):
        centre = out[:, :, d, 6:10, 6:10]
        assert torch.allclose(centre, torch.full_like(centre, d + 1.0), atol=1e-5)


def test_mirror_flips_image_and_label_on_the_same_axes() -> None:
    label = blobs(16, (6, 7, 8), seed=8)
    image = onehot_image(label)
    out_image, out_label = Mirror()(image.clone(), label.clone(), gen(9))
    assert torch.equal(out_image.argmax(dim=1, keepdim=True), out_label)


# ---------------------------------------------------------------------------------------------------- pass-through


def test_undrawn_samples_pass_through_exactly() -> None:
    image = torch.randn(4000, 1, 6, 6, generator=gen(10))
    label = blobs(4000, (6, 6))
    out_image, out_label = SpatialTransform()(image.clone(), label.clone(), gen(11))
    untouched = ~changed(image, out_image)
    assert_frequency(untouched, 0.8 * 0.8)
    assert torch.equal(out_label[untouched], label[untouched])


def test_no_spatial_draw_means_no_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("resampled although nothing was drawn")

    monkeypatch.setattr(spatial_module, "grid_sample", forbidden)
    monkeypatch.setattr(spatial_module, "affine_grid", forbidden)
    image, label = torch.randn(4, 1, 6, 6), blobs(4, (6, 6))
    out_image, out_label = SpatialTransform(0.0, None, 0.0)(image.clone(), label.clone(), gen())
    assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_compose_copies_unless_inplace() -> None:
    image, label = torch.randn(4, 1, 8, 8), blobs(4, (8, 8))
    before = image.clone(), label.clone()
    NNUNetAugmentation(2, p_mirror=1)(image, label, gen())
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])
    out_image, _ = NNUNetAugmentation(2, p_mirror=1, inplace=True)(image, label, gen())
    assert out_image.data_ptr() == image.data_ptr() and not torch.equal(image, before[0])


# ---------------------------------------------------------------------------------------------------- probabilities

N = 10000


@pytest.fixture(scope="module")
def flat_batch() -> torch.Tensor:
    return torch.randn(N, 2, 8, 8, generator=gen(12))


@pytest.mark.parametrize("transform,p", [
    (SpatialTransform(0.2, None, 0.0), 0.2),
    (SpatialTransform(0.0, None, 0.2), 0.2),
    (GaussianNoise(), 0.1),
    (MultiplicativeBrightness(), 0.15),
    (Contrast(), 0.15),
    (Gamma(0.1, invert_image=True), 0.1),
    (Gamma(), 0.3),
])
def test_per_sample_probability(transform: object, p: float, flat_batch: torch.Tensor) -> None:
    out, _ = transform(flat_batch.clone(), None, gen(13))
    assert_frequency(changed(flat_batch, out), p)


@pytest.mark.parametrize("transform,p_channel", [
    (GaussianBlur(), 0.2 * 0.5),
    # nearest-exact down to round(8 * zoom) < 8 pixels, i.e. zoom < 0.9375, changes the channel
    (SimulateLowResolution(), 0.25 * 0.5 * (0.9375 - 0.5) / 0.5),
])
def test_per_channel_probability(transform: object, p_channel: float, flat_batch: torch.Tensor) -> None:
    out, _ = transform(flat_batch.clone(), None, gen(14))
    per_channel = changed(flat_batch.flatten(0, 1), out.flatten(0, 1))
    assert_frequency(per_channel, p_channel)
    both = per_channel.view(N, 2).all(dim=1)
    assert_frequency(both, p_channel ** 2 / (0.2 if isinstance(transform, GaussianBlur) else 0.25))


def test_mirror_axes_are_independent_halves() -> None:
    image = torch.randn(N, 1, 4, 5, generator=gen(15))
    out, _ = Mirror()(image.clone(), None, gen(16))
    flipped = torch.zeros(N, 2, dtype=torch.bool)
    for code in range(4):
        dims = [2 + a for a in range(2) if code >> a & 1]
        match = (out == (image.flip(dims) if dims else image)).flatten(1).all(dim=1)
        flipped[match] = torch.tensor([bool(code & 1), bool(code & 2)])
    assert_frequency(flipped[:, 0], 0.5)
    assert_frequency(flipped[:, 1], 0.5)
    assert_frequency(flipped.all(dim=1), 0.25)


# ---------------------------------------------------------------------------------------------------- ranges


def test_contrast_keeps_each_channel_range() -> None:
    image = torch.randn(200, 2, 10, 10, generator=gen(17)) * 3 + 1
    out, _ = Contrast(p=1.0)(image.clone(), None, gen(18))
    flat_in, flat_out = image.flatten(2), out.flatten(2)
    assert (flat_out.amin(2) >= flat_in.amin(2) - 1e-5).all() and (flat_out.amax(2) <= flat_in.amax(2) + 1e-5).all()
    mean = flat_in.mean(2, keepdim=True)
    ratio = ((flat_out - mean) / (flat_in - mean)).median(dim=2).values  # unclipped voxels give the factor
    assert ((ratio > 0.75 - 1e-4) & (ratio < 1.25 + 1e-4)).all()
    assert 0.35 < (ratio < 1).float().mean() < 0.65  # two-sided draw: shrink and stretch equally often


def test_brightness_factor_is_per_channel_and_in_range() -> None:
    image = torch.rand(300, 2, 6, 6, generator=gen(19)) + 0.5
    out, _ = MultiplicativeBrightness(p=1.0)(image.clone(), None, gen(20))
    ratio = (out / image).flatten(2)
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-5)
    factors = ratio[..., 0]
    assert ((factors >= 0.75 - 1e-6) & (factors <= 1.25 + 1e-6)).all()
    assert (factors[:, 0] != factors[:, 1]).all()
    assert 0.4 < (factors < 1).float().mean() < 0.6


def reference_gamma(x: torch.Tensor, gamma: float, invert: bool, retain: bool) -> torch.Tensor:
    """nnU-Net's per-channel gamma, written the literal way: negate, rescale, power, restore stats, negate back."""
    x = -x if invert else x.clone()
    mean, std = x.mean(), x.std()
    low, value_range = x.min(), x.max() - x.min()
    y = ((x - low) / value_range.clamp_min(1e-7)) ** gamma * value_range + low
    if retain:
        y = (y - y.mean()) * (std / y.std().clamp_min(1e-7)) + mean
    return -y if invert else y


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("retain", [False, True])
def test_gamma_matches_the_literal_formula(invert: bool, retain: bool) -> None:
    image = torch.randn(3, 2, 7, 7, generator=gen(21), dtype=torch.float64) * 2 + 5
    gammas = torch.tensor([[0.7, 1.0], [1.3, 1.5], [0.85, 1.2]], dtype=torch.float64)
    transform = Gamma(1.0, invert_image=invert, retain_stats=retain)
    out = transform._apply(image.clone(), gammas)
    for b in range(3):
        for c in range(2):
            expected = reference_gamma(image[b, c], float(gammas[b, c]), invert, retain)
            assert torch.allclose(out[b, c], expected, atol=1e-9)


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_retains_mean_and_std(invert: bool) -> None:
    image = torch.rand(50, 2, 9, 9, generator=gen(22)) * 4 - 1
    out, _ = Gamma(1.0, invert_image=invert)(image.clone(), None, gen(23))
    assert changed(image.flatten(0, 1), out.flatten(0, 1)).all()
    assert torch.allclose(out.flatten(2).mean(2), image.flatten(2).mean(2), atol=1e-4)
    assert torch.allclose(out.flatten(2).std(2), image.flatten(2).std(2), rtol=1e-3)


def test_noise_std_stays_in_range() -> None:
    image = torch.zeros(400, 2, 32, 32)
    out, _ = GaussianNoise(p=1.0)(image.clone(), None, gen(24))
    std = out.flatten(2).std(2)
    assert (std < 0.1 * 1.15).all()
    assert torch.allclose(std[:, 0], std[:, 1], rtol=0.2, atol=2e-3)  # one sigma shared by the channels
    assert not torch.equal(out[:, 0], out[:, 1])  # but independent fields
    assert 0.04 < std.mean() < 0.06  # sigma ~ U(0, 0.1)


def reference_blur(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Per-axis conv with an explicitly built +-round(3 sigma) Gaussian and reflect borders."""
    ndim = x.dim() - 1
    out = x[None]
    for axis, sigma in enumerate(sigmas):
        radius = max(1, round(3 * sigma))
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
        kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
        kernel = (kernel / kernel.sum()).view(1, 1, *[len(taps) if a == axis else 1 for a in range(ndim)])
        pad = [0] * (2 * ndim)
        pad[2 * (ndim - 1 - axis)] = pad[2 * (ndim - 1 - axis) + 1] = radius
        conv = F.conv2d if ndim == 2 else F.conv3d
        out = conv(F.pad(out, pad, mode="reflect"), kernel)
    return out[0]


@pytest.mark.parametrize("shape", [(12, 11), (9, 10, 11)])
def test_gaussian_blur_matches_convolution(shape: tuple[int, ...]) -> None:
    x = torch.randn(3, *shape, generator=gen(25), dtype=torch.float64)
    sigmas = torch.tensor([[0.5, 0.7, 1.0], [0.9, 0.6, 0.55], [1.0, 1.0, 0.8]], dtype=torch.float64)[:, :len(shape)]
    out = gaussian_blur(x.clone(), sigmas)
    for i in range(3):
        assert torch.allclose(out[i], reference_blur(x[i:i + 1], sigmas[i].tolist())[0], atol=1e-12)


def test_low_resolution_stays_in_range_and_smooths() -> None:
    image = (torch.arange(16).view(1, 16) % 2).float().expand(16, 16)[None, None].repeat(4, 1, 1, 1)
    out, _ = SimulateLowResolution(1.0, 1.0, (0.5, 0.6))(image.clone(), None, gen(26))
    assert out.min() >= 0 and out.max() <= 1
    assert (out.diff(dim=-1).abs().sum() < 0.8 * image.diff(dim=-1).abs().sum()).item()
    with pytest.raises(ValueError, match="cubic"):
        SimulateLowResolution(upsample="cubic")(torch.zeros(1, 1, 4, 4, 4), None, gen())


# ---------------------------------------------------------------------------------------------------- seeds, dtypes


@pytest.mark.parametrize("ndim", [2, 3])
def test_same_seed_same_output_different_seed_different(ndim: int) -> None:
    shape = (24, 24) if ndim == 2 else (12, 12, 12)
    image, label = torch.randn(8, 2, *shape, generator=gen(27)), blobs(8, shape)
    augment = NNUNetAugmentation(ndim)
    first, second, other = (augment(image, label, gen(s)) for s in (1, 1, 2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,label_dtype", [(torch.float32, torch.int64), (torch.float64, torch.uint8)])
@pytest.mark.parametrize("ndim", [2, 3])
def test_every_transform_keeps_dtype_device_and_labels(device: str, dtype: torch.dtype, label_dtype: torch.dtype,
                                                       ndim: int) -> None:
    shape = (16, 16) if ndim == 2 else (8, 8, 8)
    label = blobs(4, shape).to(device=device, dtype=label_dtype)
    image = torch.randn(4, 2, *shape, generator=gen(28)).to(device=device, dtype=dtype)
    forced = NNUNetAugmentation(ndim, p_rotation=1, p_scaling=1, p_noise=1, p_blur=1, blur_p_per_channel=1,
                                p_brightness=1, p_contrast=1, p_low_resolution=1, low_resolution_p_per_channel=1,
                                p_gamma_inverted=1, p_gamma=1, p_mirror=1, label_mode="onehot")
    out_image, out_label = forced(image, label, gen(29))
    assert out_image.dtype == dtype and out_label.dtype == label_dtype
    assert out_image.device == image.device and out_label.device == label.device
    assert out_image.shape == image.shape and out_label.shape == label.shape
    assert torch.isfinite(out_image).all()
    assert set(out_label.unique().tolist()) <= set(label.unique().tolist()) | {0}


def test_clear_errors() -> None:
    image, label = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        GaussianNoise()(torch.zeros(8, 8), None, gen())
    with pytest.raises(TypeError, match="integer class ids"):
        Mirror()(image, label.float(), gen())
    with pytest.raises(ValueError, match="matching image"):
        Mirror()(image, label[..., :4], gen())
    with pytest.raises(TypeError, match="CPU torch.Generator"):
        Mirror()(image, label, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating point"):
        Mirror()(label, label, gen())
    with pytest.raises(ValueError, match="probability"):
        GaussianNoise(p=1.5)
    with pytest.raises(ValueError, match="low <= high"):
        Contrast(factor=(1.2, 0.8))
    with pytest.raises(ValueError, match="3 spatial axes"):
        NNUNetAugmentation(3)(image, label, gen())
    with pytest.raises(ValueError, match="ids in"):
        SpatialTransform(1.0, label_mode="onehot", num_classes=2)(image, label + 2, gen())


def test_for_patch_size_follows_nnunet() -> None:
    wide = NNUNetAugmentation.for_patch_size((64, 160)).transforms[0]
    square = NNUNetAugmentation.for_patch_size((128, 128)).transforms[0]
    iso = NNUNetAugmentation.for_patch_size((96, 96, 96)).transforms[0]
    assert wide.rotation_degrees == (-15.0, 15.0) and square.rotation_degrees == (-180.0, 180.0)
    assert iso.rotation_degrees == (-30.0, 30.0) and iso.axes is None
    assert NNUNetAugmentation(3).transforms[0].rotation_degrees == (-30.0, 30.0)
    assert NNUNetAugmentation(2).transforms[0].rotation_degrees == (-180.0, 180.0)
    assert NNUNetAugmentation(3, dummy_2d=True).transforms[0].rotation_degrees == (-180.0, 180.0)
    dropped = NNUNetAugmentation(2, p_noise=0, p_mirror=0)
    assert not any(isinstance(t, (GaussianNoise, Mirror)) for t in dropped.transforms)
    assert isinstance(dropped, Compose) and len(dropped.transforms) == 7


# ---------------------------------------------------------------------------------------------------- workers


class _SameCase(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.linspace(0, 1, 64).view(1, 8, 8), (torch.arange(64).view(1, 8, 8) % 3)


def _epoch(seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    collate = AugmentingCollate(NNUNetAugmentation(2, p_noise=1))
    loader = DataLoader(_SameCase(), batch_size=2, num_workers=2, collate_fn=collate)
    return [image for image, _ in loader]


def test_workers_draw_different_streams_reproducibly() -> None:
    first, again = _epoch(0), _epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # batch 0 and 1 come from different workers, same data
    assert not all(torch.equal(a, b) for a, b in zip(first, _epoch(1), strict=True))


def test_collate_pickles_without_its_generator() -> None:
    collate = AugmentingCollate(Mirror())
    collate([_SameCase()[0]] * 2)
    clone = pickle.loads(pickle.dumps(collate))
    assert clone._generator is None and isinstance(clone.augmentation, Mirror)


# ---------------------------------------------------------------------------------------------------- 3D on the CPU


def reference_resample(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, out: tuple[int, ...],
                       mode: str) -> torch.Tensor:
    """F.grid_sample (float64) of (C, *in) at p = matrix @ o + offset (voxel units), via torch's own affine_grid."""
    size_in = torch.tensor(x.shape[1:], dtype=torch.float64)
    size_out = torch.tensor(out, dtype=torch.float64)
    # u = (2p + 1) / n - 1 on both sides (align_corners=False), so p_in = matrix (n_out u_out / 2 + (n_out - 1) / 2)
    linear = (2 / size_in)[:, None] * matrix * (size_out / 2)[None, :]
    shift = (2 / size_in) * (matrix @ ((size_out - 1) / 2) + offset) + 1 / size_in - 1
    theta = torch.cat([linear.flip(0, 1), shift.flip(0)[:, None]], dim=1)[None]
    grid = F.affine_grid(theta, (1, x.shape[0], *out), align_corners=False)
    return F.grid_sample(x[None].double(), grid, mode=mode, padding_mode="zeros", align_corners=False)[0]


@pytest.mark.parametrize("size,out", [((9, 8, 7), (6, 5, 4)), ((5, 6, 7), (5, 6, 7)), ((1, 6, 7), (1, 6, 7)),
                                      ((20, 3, 11), (13, 3, 9)), ((40, 36, 33), (40, 36, 33))])
def test_cpu_affine_resampling_matches_grid_sample(size: tuple[int, ...], out: tuple[int, ...]) -> None:
    from mipcandy.data.augment.mosaic import affine_resample

    g = gen(40)
    for _ in range(4):  # rotations up to 90 degrees per axis, zoom in and out, positions well outside the input
        angles = (torch.rand(1, 3, generator=g, dtype=torch.float64) - 0.5) * math.pi
        matrix = rotation_matrices(angles, 3, (0, 1, 2))[0] * (0.6 + torch.rand((), generator=g, dtype=torch.float64))
        offset = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor(size) + 1
        image = torch.randn(2, *size, generator=g, dtype=torch.float64)
        label = torch.randint(0, 5, (1, *size), generator=g)
        expected_image = reference_resample(image, matrix, offset, out, "bilinear")
        expected_label = reference_resample(label, matrix, offset, out, "nearest").long()
        for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
            targets = [torch.empty(2, *out, dtype=dtype), torch.empty(1, *out, dtype=torch.long)]
            affine_resample([image.to(dtype), label], targets, ["linear", "nearest"], matrix, offset, dtype)
            torch.testing.assert_close(targets[0].double(), expected_image, atol=tolerance * 4, rtol=0)
            assert torch.equal(targets[1], expected_label)


def test_cpu_spatial_transform_rotates_about_the_patch_centre() -> None:
    """A fixed 30-degree rotation of every axis with scale 1.2 and a centre crop, against torch's own sampler."""
    size, patch = (14, 13, 12), (9, 10, 7)
    image = torch.randn(3, 2, *size, generator=gen(41), dtype=torch.float64)
    label = blobs(3, size, seed=42)
    transform = SpatialTransform(1.0, (30.0, 30.0), 1.0, (1.2, 1.2), patch_size=patch)
    out_image, out_label = transform(image.clone(), label.clone(), gen())
    matrix = rotation_matrices(torch.full((1, 3), math.radians(30.0), dtype=torch.float64), 3, (0, 1, 2))[0] * 1.2
    centre = (torch.tensor(patch, dtype=torch.float64) - 1) / 2
    start = torch.tensor([s // 2 - p // 2 for s, p in zip(size, patch, strict=True)], dtype=torch.float64)
    offset = start + centre - matrix @ centre
    for b in range(3):
        torch.testing.assert_close(out_image[b], reference_resample(image[b], matrix, offset, patch, "bilinear"),
                                   atol=1e-10, rtol=0)
        assert torch.equal(out_label[b], reference_resample(label[b], matrix, offset, patch, "nearest").long())
