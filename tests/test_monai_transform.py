"""MONAI dictionary transforms inside our batched augmentation pipeline, with real MONAI transforms."""
from __future__ import annotations

import pickle
import sys

import pytest
import torch
from monai.transforms import Compose as MonaiCompose
from monai.transforms import Lambdad, RandAffined, RandFlipd, RandGaussianNoised

from mipcandy.data.augment import AugmentingCollate, Compose, Mirror
from mipcandy.data.augment.monai_transform import MONAITransform


def batch(seed: int = 0, shape: tuple[int, ...] = (3, 1, 12, 14)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, shape, generator=generator)
    return label.float() * 10 + torch.rand(shape, generator=generator), label


def test_each_case_gets_the_monai_transform() -> None:
    image, label = batch()
    out_image, out_label = MONAITransform(RandFlipd(keys=["image", "label"], prob=1.0, spatial_axis=1))(
        image, label, torch.Generator().manual_seed(0))
    assert type(out_image) is torch.Tensor and out_label.dtype == torch.long
    assert torch.equal(out_image, image.flip(3)) and torch.equal(out_label, label.flip(3))


def test_same_draws_as_monai_run_directly_from_the_drawn_seed() -> None:
    image, label = batch(1)
    affine = RandAffined(keys=["image", "label"], prob=1.0, rotate_range=0.5, scale_range=0.2,
                         mode=("bilinear", "nearest"), padding_mode="zeros")
    out_image, out_label = MONAITransform(affine)(image, label, torch.Generator().manual_seed(7))
    seed = int(torch.randint(0, 2 ** 32, (1,), generator=torch.Generator().manual_seed(7)))
    direct = RandAffined(keys=["image", "label"], prob=1.0, rotate_range=0.5, scale_range=0.2,
                         mode=("bilinear", "nearest"), padding_mode="zeros")
    direct.set_random_state(seed=seed)
    for row in range(image.shape[0]):
        expected = direct({"image": image[row], "label": label[row]})
        torch.testing.assert_close(out_image[row], expected["image"].as_tensor())
        assert torch.equal(out_label[row], expected["label"].as_tensor().round().long())
    assert not torch.equal(out_label, label)  # it did rotate


def test_reproducible_from_our_generator_and_aligned() -> None:
    image, label = batch(2)
    aligned = label.float()  # an image equal to its label shows any misalignment after the transform
    step = MONAITransform(RandAffined(keys=["image", "label"], prob=1.0, rotate_range=0.7, mode="nearest"))
    first = step(aligned, label, torch.Generator().manual_seed(3))
    again = step(aligned, label, torch.Generator().manual_seed(3))
    other = step(aligned, label, torch.Generator().manual_seed(4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    assert torch.equal(first[0].long(), first[1])


def test_composes_with_our_transforms_and_runs_in_a_collate() -> None:
    image, label = batch(3, (2, 1, 6, 8, 8))
    pipeline = Compose([MONAITransform(MonaiCompose([RandGaussianNoised(keys=["image"], prob=1.0, std=0.1)])),
                        Mirror(1.0, (0,))])
    out_image, out_label = pipeline(image, label, torch.Generator().manual_seed(0))
    assert torch.equal(out_label, label.flip(2))
    assert 0 < float((out_image - image.flip(2)).abs().mean()) < 0.2
    collate = pickle.loads(pickle.dumps(AugmentingCollate(pipeline)))
    images, labels = collate([(image[0], label[0]), (image[1], label[1])])
    assert images.shape == image.shape and torch.equal(labels, label.flip(2))


def test_without_a_label() -> None:
    image, _ = batch(4)
    step = MONAITransform(RandFlipd(keys=["image", "label"], prob=1.0, spatial_axis=0, allow_missing_keys=True))
    out_image, out_label = step(image, None, torch.Generator())
    assert out_label is None and torch.equal(out_image, image.flip(2))


def test_errors_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    image, label = batch(5)
    crop_by_case = Lambdad(keys=["image"], func=lambda x: x[:, : 4 + int(x.flatten()[0])])  # rows 0, 1, 2
    rows = torch.arange(3.0).view(3, 1, 1, 1).expand_as(image).contiguous()
    with pytest.raises(ValueError, match=r"images came out with different shapes \[\(1, 4, 14\), \(1, 5, 14\)"):
        MONAITransform(crop_by_case)(rows, label, torch.Generator())
    with pytest.raises(ValueError, match="two different keys"):
        MONAITransform(RandFlipd(keys=["image"]), keys=("image", "image"))
    with pytest.raises(ValueError, match="add the batch axis"):
        MONAITransform(RandFlipd(keys=["image", "label"]))(image[0], label[0], torch.Generator())
    monkeypatch.setitem(sys.modules, "monai.transforms", None)
    with pytest.raises(ImportError, match="MONAITransform needs MONAI"):
        MONAITransform(lambda case: case)
