"""Class ids <-> one-hot channels, checked against MONAI's one_hot and AsDiscrete."""
from __future__ import annotations

import pytest
import torch
from monai.networks.utils import one_hot
from monai.transforms import AsDiscrete

from mipcandy.data.conversion import convert_ids_to_logits, convert_logits_to_ids, is_sigmoid_output


def test_one_hot_matches_monai_for_cases_and_batches() -> None:
    ids = torch.randint(0, 4, (1, 5, 6, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(convert_ids_to_logits(ids, 4), one_hot(ids[None], 4, dim=1)[0])
    batch = torch.randint(0, 3, (2, 1, 8, 9), generator=torch.Generator().manual_seed(1))
    assert torch.equal(convert_ids_to_logits(batch, 3, channel_dim=1), one_hot(batch, 3, dim=1))
    assert convert_ids_to_logits(batch.to(torch.uint8), 3, channel_dim=1, dtype=torch.float16).dtype == torch.float16


def test_argmax_and_sigmoid_threshold_match_monai() -> None:
    logits = torch.randn(3, 6, 7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(convert_logits_to_ids(logits), AsDiscrete(argmax=True)(logits).long())
    single = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    expected = AsDiscrete(threshold=0.5)(single.sigmoid()).long()
    assert torch.equal(convert_logits_to_ids(single, channel_dim=1), expected)
    assert torch.equal(convert_logits_to_ids(single.sigmoid(), channel_dim=1, threshold=0.5), expected)
    assert is_sigmoid_output(single, channel_dim=1) and not is_sigmoid_output(logits)


def test_round_trip() -> None:
    ids = torch.randint(0, 5, (2, 1, 4, 4, 4), generator=torch.Generator().manual_seed(4))
    assert torch.equal(convert_logits_to_ids(convert_ids_to_logits(ids, 5, channel_dim=1), channel_dim=1), ids)
    assert torch.equal(convert_logits_to_ids(convert_ids_to_logits(ids[0], 5)), ids[0])


def test_bad_input_is_explained() -> None:
    ids = torch.tensor([[[0, 1], [2, 3]]])
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\)"):
        convert_ids_to_logits(ids, 3)
    with pytest.raises(ValueError, match="at least 2"):
        convert_ids_to_logits(ids.clamp(max=1), 1)
    with pytest.raises(ValueError, match="single channel"):
        convert_ids_to_logits(torch.zeros(2, 3, 3, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="integer class ids"):
        convert_ids_to_logits(ids.float(), 4)
    with pytest.raises(TypeError, match="floating point"):
        convert_logits_to_ids(ids)
    with pytest.raises(ValueError, match="no channel axis"):
        convert_logits_to_ids(torch.zeros(3, 4), channel_dim=2)
