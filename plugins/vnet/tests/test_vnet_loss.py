"""The paper's Dice loss (Milletari et al. 2016, eq. 1) and the backward hook that offers it as loss="dice"."""
from __future__ import annotations

import copy

import pytest
import torch
from monai.losses import DiceLoss

from candy_vnet.loss import dice_loss
from candy_vnet.vnet import make_vnet3d
from mipcandy import TrainerToolbox, get_plugin_manager

# MONAI's DiceLoss with squared_pred=True is eq. 1 (squared denominator), one Dice per sample and class, with the
# same 1e-5 smoothing in numerator and denominator: the independent reference.
MONAI_BINARY = DiceLoss(sigmoid=True, squared_pred=True)
MONAI_MULTICLASS = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, squared_pred=True)


def random_batch(num_classes: int, shape=(2, 6, 7, 8), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    batch, *spatial = shape
    logits = torch.randn(batch, num_classes, *spatial, generator=generator)
    labels = torch.randint(0, max(num_classes, 2), (batch, 1, *spatial), generator=generator)
    return logits, labels


@pytest.mark.parametrize("num_classes", [1, 2, 4])
def test_dice_loss_matches_monai_squared_dice(num_classes) -> None:
    logits, labels = random_batch(num_classes)
    reference = MONAI_BINARY(logits, labels.float()) if num_classes == 1 else MONAI_MULTICLASS(logits, labels)
    torch.testing.assert_close(dice_loss(logits, labels), reference)


def test_dice_loss_by_hand() -> None:
    # p = sigmoid(0) = 0.5 everywhere, k of n voxels foreground: D = 2 * 0.5k / (0.25n + k).
    labels = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    labels[..., :2, :, :] = 1
    n, k = 64, 32
    expected = 1 - (2 * 0.5 * k + 1e-5) / (0.25 * n + k + 1e-5)
    assert float(dice_loss(torch.zeros(1, 1, 4, 4, 4), labels)) == pytest.approx(expected)
    perfect = torch.where(labels == 1, 50.0, -50.0).float()
    assert float(dice_loss(perfect, labels)) == pytest.approx(0, abs=1e-6)


def test_dice_loss_names_bad_labels() -> None:
    logits, labels = random_batch(3)
    with pytest.raises(ValueError, match=r"class ids span 1\.\.3, but the logits have 3 channel"):
        dice_loss(logits, labels + 1)
    with pytest.raises(ValueError, match="do not fit logits"):
        dice_loss(logits, labels[:, 0])


class RefusingCriterion(torch.nn.Module):
    """Fails the test if the core's criterion is used where the bundle's loss should be."""

    def forward(self, *_):
        raise AssertionError("the core's criterion was called")


class CountingCriterion(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, outputs, labels):
        self.calls += 1
        loss = outputs.square().mean()
        return loss, {"loss": float(loss.detach())}


def toolbox(model, criterion) -> TrainerToolbox:
    return TrainerToolbox(model, torch.optim.SGD(model.parameters(), lr=0.1), None, criterion)


def test_backward_hook_steps_on_the_dice_loss() -> None:
    torch.manual_seed(0)
    net = make_vnet3d(1, 3, base_ch=2, down_convs=(1, 1), up_convs=(1, 1))
    twin = copy.deepcopy(net)
    images = torch.randn(2, 1, 8, 8, 8)
    _, labels = random_batch(3, shape=(2, 8, 8, 8), seed=1)
    loss, metrics = get_plugin_manager().call("vnet", "backward", images=images, labels=labels,
                                              toolbox=toolbox(net, RefusingCriterion()), options={"loss": "dice"})
    expected = MONAI_MULTICLASS(twin(images), labels)  # the same weights and batch, scored independently
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5) and metrics == {"dice loss": loss}
    for (name, ours), theirs in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, msg=name)


def test_backward_hook_leaves_the_default_to_the_core_criterion() -> None:
    net = make_vnet3d(1, 2, base_ch=2, down_convs=(1,), up_convs=(1,))
    criterion = CountingCriterion()
    loss, metrics = get_plugin_manager().call("vnet", "backward", images=torch.randn(2, 1, 4, 4, 4),
                                              labels=torch.zeros(2, 1, 4, 4, 4, dtype=torch.long),
                                              toolbox=toolbox(net, criterion), options={})
    assert criterion.calls == 1 and metrics == {"loss": loss}
    with pytest.raises(ValueError, match="option loss must be one of"):
        get_plugin_manager().call("vnet", "backward", images=None, labels=None, toolbox=None,
                                  options={"loss": "focal"})
