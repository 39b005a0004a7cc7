"""Run a MONAI dictionary transform as one step of our batched augmentation pipeline.

MONAI's transform library is large (elastic deformation, bias field, histogram shifts...); this adapter lets a
pipeline use any of it beside our batched transforms, without MONAI becoming a dependency: it is imported only
when an adapter is built.

Our transforms take ``(image, label, generator)`` on a batch ``(B, C, *spatial)``; MONAI's dictionary transforms
take one case, ``{"image": (C, *spatial), "label": (1, *spatial)}``. The adapter applies the MONAI transform to
each case of the batch in turn and stacks the results. Its randomness comes from our generator: each call draws
one seed from it for the MONAI transform's own random state (``set_random_state``), so a pipeline seeded as in
:mod:`mipcandy.data.augment.pipeline` is reproducible in any DataLoader worker.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from mipcandy.data.augment.base import validate_batch

__all__ = ["MONAITransform"]

_SEED_LIMIT = 2 ** 32  # numpy's RandomState, which MONAI seeds, takes 32-bit seeds


class MONAITransform:
    """Wrap a MONAI dictionary transform (``RandAffined``, ``Rand3DElasticd``, a MONAI ``Compose``...).

    ``keys`` names the image and the label in the dictionaries the MONAI transform was built for. Without a label
    (``label=None``) only the image key is passed: build the MONAI transform with ``allow_missing_keys=True``.
    Results come back as plain tensors on the input's device and dtype; a label turned into floats by MONAI
    (e.g. nearest-neighbour resampling) is rounded back to its integer dtype. Every case must come out with the
    same shape (use fixed-size crops), since the batch is stacked again.
    """

    def __init__(self, transform: Callable[[Mapping[str, Any]], Mapping[str, Any]], *,
                 keys: tuple[str, str] = ("image", "label")) -> None:
        try:
            from monai.transforms import Randomizable
        except ImportError:
            raise ImportError("MONAITransform needs MONAI, which is optional: install it with `pip install monai` "
                              "(or drop the MONAI step from the augmentation pipeline)") from None
        if len(keys) != 2 or keys[0] == keys[1]:
            raise ValueError(f"MONAITransform: keys must name the image and the label, two different keys, got "
                             f"{keys!r}")
        self.transform = transform
        self.keys = tuple(keys)
        self.randomizable = isinstance(transform, Randomizable)

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        validate_batch(image, label, generator, where=repr(self))
        if self.randomizable:
            seed = int(torch.randint(0, _SEED_LIMIT, (1,), generator=generator))
            self.transform.set_random_state(seed=seed)  # type: ignore[attr-defined]
        image_key, label_key = self.keys
        images, labels = [], []
        for row in range(image.shape[0]):
            case = {image_key: image[row]} if label is None else {image_key: image[row], label_key: label[row]}
            result = self.transform(case)
            images.append(self._plain(result[image_key], image))
            if label is not None:
                labels.append(self._plain(result[label_key], label))
        return self._stack(images, "image"), None if label is None else self._stack(labels, "label")

    @staticmethod
    def _plain(value: Any, like: Tensor) -> Tensor:
        """A plain tensor (not MONAI's MetaTensor) with ``like``'s device and dtype."""
        tensor = torch.as_tensor(value).as_subclass(Tensor)
        if tensor.is_floating_point() and not like.is_floating_point():
            tensor = tensor.round()
        return tensor.to(device=like.device, dtype=like.dtype)

    def _stack(self, cases: list[Tensor], what: str) -> Tensor:
        shapes = {tuple(c.shape) for c in cases}
        if len(shapes) > 1:
            raise ValueError(f"{self!r}: the cases' {what}s came out with different shapes {sorted(shapes)}, so the "
                             "batch cannot be stacked again; use fixed-size MONAI crops")
        return torch.stack(cases)

    def __repr__(self) -> str:
        return f"MONAITransform({type(self.transform).__name__}, keys={self.keys})"
