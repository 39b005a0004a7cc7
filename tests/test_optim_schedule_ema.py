"""Poly and absolute linear learning-rate schedules (horizon, extension, resume, restarts) and the weight EMA
against closed forms."""
from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mipcandy.common.optim import AbsoluteLinearLR, ExponentialMovingAverage, PolyLRScheduler

LR = 1e-2


def make_optimizer(lr: float = LR) -> torch.optim.SGD:
    """SGD with two parameter groups, so that every group is checked."""
    return torch.optim.SGD([{"params": [nn.Parameter(torch.ones(2))]},
                            {"params": [nn.Parameter(torch.ones(3))], "lr": lr / 10}], lr=lr, momentum=0.9)


def advance(scheduler: PolyLRScheduler, steps: int) -> None:
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()


def group_lrs(scheduler: PolyLRScheduler) -> list[float]:
    return [group["lr"] for group in scheduler.optimizer.param_groups]


def nnunet_poly(step: int, max_steps: int) -> float:
    """nnU-Net's per-epoch formula, valid while step < max_steps."""
    return LR * (1 - step / max_steps) ** 0.9


def test_poly_follows_nnunet_and_stays_zero_past_the_horizon():
    scheduler = PolyLRScheduler(make_optimizer(), LR, 10)
    for step in range(16):
        lrs = group_lrs(scheduler)
        expected = nnunet_poly(step, 10) if step < 10 else 0.0
        assert all(isinstance(lr, float) for lr in lrs)
        assert lrs == pytest.approx([expected, expected], rel=1e-12, abs=0)
        assert scheduler.get_last_lr() == pytest.approx(lrs, rel=1e-12)
        advance(scheduler, 1)
    assert isinstance((1 - 12 / 10) ** 0.9, complex)  # what the naive formula gives past the horizon


def test_state_dict_round_trip_restores_step_horizon_and_lr():
    original = PolyLRScheduler(make_optimizer(), LR, 10)
    advance(original, 4)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = PolyLRScheduler(make_optimizer(0.5), 0.5, 3, exponent=2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert (restored.max_steps, restored.last_epoch, restored.exponent) == (10, 4, 0.9)
    assert group_lrs(restored) == pytest.approx([nnunet_poly(4, 10)] * 2, rel=1e-12)
    for _ in range(8):
        advance(original, 1)
        advance(restored, 1)
        assert group_lrs(restored) == pytest.approx(group_lrs(original), rel=1e-12, abs=0)
    with pytest.raises(ValueError, match="not a PolyLRScheduler state dict"):
        restored.load_state_dict({"last_epoch": 3})


def test_continuous_extension_stretches_the_remaining_decay():
    scheduler = PolyLRScheduler(make_optimizer(), LR, 10)
    advance(scheduler, 6)
    before = group_lrs(scheduler)[0]
    scheduler.extend(20)
    assert group_lrs(scheduler)[0] == pytest.approx(before, rel=1e-12)
    previous = before
    for step in range(7, 26):
        advance(scheduler, 1)
        lr = group_lrs(scheduler)[0]
        expected = before * ((20 - step) / (20 - 6)) ** 0.9 if step < 20 else 0.0
        assert lr == pytest.approx(expected, rel=1e-12, abs=0)
        assert 0 <= lr <= previous and (lr > 0) == (step < 20)
        previous = lr


def test_extensions_compose_and_resume_with_a_longer_plan():
    first = PolyLRScheduler(make_optimizer(), LR, 10)
    advance(first, 4)
    state = first.state_dict()
    # a continued run builds its scheduler for the new length, loads the old state, then extends
    resumed = PolyLRScheduler(make_optimizer(), LR, 30)
    resumed.load_state_dict(state)
    at_resume = group_lrs(resumed)[0]
    assert at_resume == pytest.approx(nnunet_poly(4, 10), rel=1e-12)
    resumed.extend(30)
    assert group_lrs(resumed)[0] == pytest.approx(at_resume, rel=1e-12)
    advance(resumed, 11)
    at_second = group_lrs(resumed)[0]
    assert at_second == pytest.approx(at_resume * (15 / 26) ** 0.9, rel=1e-12)
    resumed.extend(45)
    assert group_lrs(resumed)[0] == pytest.approx(at_second, rel=1e-12)
    advance(resumed, 15)
    assert group_lrs(resumed)[0] == pytest.approx(at_second * (15 / 30) ** 0.9, rel=1e-12)
    advance(resumed, 15)
    assert group_lrs(resumed)[0] == 0.0
    resumed.extend(45)  # unchanged horizon: no-op
    with pytest.raises(ValueError, match="only grows"):
        resumed.extend(40)


def test_finished_schedule_needs_an_explicit_replan():
    scheduler = PolyLRScheduler(make_optimizer(), LR, 10)
    advance(scheduler, 12)
    with pytest.raises(ValueError, match="continuous=False"):
        scheduler.extend(20)
    scheduler.extend(20, continuous=False)
    assert group_lrs(scheduler) == pytest.approx([nnunet_poly(12, 20)] * 2, rel=1e-12)
    advance(scheduler, 3)
    assert group_lrs(scheduler)[0] == pytest.approx(nnunet_poly(15, 20), rel=1e-12)
    advance(scheduler, 10)
    with pytest.raises(ValueError, match="not after the current step"):
        scheduler.extend(24, continuous=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"initial_lr": -1, "max_steps": 5}, "initial_lr"),
    ({"initial_lr": LR, "max_steps": 0}, "max_steps"),
    ({"initial_lr": LR, "max_steps": 5, "exponent": 0}, "exponent")])
def test_invalid_schedules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PolyLRScheduler(make_optimizer(), **kwargs)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    """One real SGD step in train mode: parameters and BatchNorm running statistics both change."""
    model.train()
    x = torch.randn(2, 1, 6, 6, generator=generator)
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().double().clone() for p in model.parameters()]


def run_ema(decay: float, steps: int, *, warmup: bool = False):
    """Train a model for ``steps`` steps, updating an EMA after each; return it and every weight snapshot."""
    model = make_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    ema = ExponentialMovingAverage(model, decay, warmup=warmup)
    generator = torch.Generator().manual_seed(1)
    history = [snapshot(model)]
    for _ in range(steps):
        train_step(model, optimizer, generator)
        ema.update(model)
        history.append(snapshot(model))
    return model, ema, history


@pytest.mark.parametrize("decay", [0.5, 0.9])
def test_ema_equals_the_closed_form_not_an_equal_weight_mean(decay):
    steps = 6
    model, ema, history = run_ema(decay, steps)
    for i, averaged in enumerate(ema.module.parameters()):
        closed = decay ** steps * history[0][i] + sum(
            (1 - decay) * decay ** (steps - k) * history[k][i] for k in range(1, steps + 1))
        torch.testing.assert_close(averaged.double(), closed, rtol=1e-5, atol=1e-6)
    # an equal-weight (SWA) mean of the same snapshots is clearly different
    swa = [torch.stack([h[i] for h in history]).mean(0) for i in range(len(history[0]))]
    assert max((a.double() - s).abs().max().item() for a, s in zip(ema.module.parameters(), swa, strict=True)) > 1e-3
    assert int(ema.num_updates) == steps


def test_ema_matches_torch_averaged_model_with_ema_function():
    model = make_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    ema = ExponentialMovingAverage(model, 0.8)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.8))
    reference.update_parameters(model)  # its first update copies the weights, as our constructor does
    generator = torch.Generator().manual_seed(2)
    for _ in range(5):
        train_step(model, optimizer, generator)
        ema.update(model)
        reference.update_parameters(model)
    for ours, theirs in zip(ema.module.parameters(), reference.module.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_ema_copies_buffers_and_is_an_independent_eval_copy():
    model, ema, _ = run_ema(0.9, 3)
    for (name, mine), theirs in zip(ema.module.named_buffers(), model.buffers(), strict=True):
        assert torch.equal(mine, theirs), name
    assert int(ema.module[1].num_batches_tracked) == 3
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(ema.module[0].weight, model[0].weight)
    x = torch.randn(1, 1, 6, 6)
    torch.testing.assert_close(ema(x), ema.module(x))


def test_ema_warmup_uses_the_rising_decay():
    decay, steps = 0.95, 5
    _, ema, history = run_ema(decay, steps, warmup=True)
    expected = list(history[0])
    for n in range(1, steps + 1):
        d = min(decay, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * h for e, h in zip(expected, history[n], strict=True)]
    for averaged, closed in zip(ema.module.parameters(), expected, strict=True):
        torch.testing.assert_close(averaged.double(), closed, rtol=1e-5, atol=1e-6)


def test_ema_state_restores_exactly_through_safetensors():
    model, ema, _ = run_ema(0.9, 4, warmup=True)
    blob = save_safetensors(ema.state_dict())
    restored = ExponentialMovingAverage(make_model(7), 0.9, warmup=True)
    restored.load_state_dict(load_safetensors(blob))
    for (name, a), b in zip(ema.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    ema.update(model)
    restored.update(model)  # same counter, hence the same warm-up decay
    for (name, a), b in zip(ema.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_ema_refuses_a_different_model_and_bad_decay():
    ema = ExponentialMovingAverage(make_model(0))
    with pytest.raises(ValueError, match="built from"):
        ema.update(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    other = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match="'0.weight' has shape"):
        ema.update(other)
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(make_model(0), 1.5)


def test_absolute_linear_follows_torch_linear_lr_then_rests_at_min_lr():
    k, b, steps = -1e-3, 1e-2, 9  # the line reaches 1e-3 at step 9 and 0 at step 10
    ours = AbsoluteLinearLR(make_optimizer(lr=0.5), k, b, min_lr=1e-6)
    reference_optimizer = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=b)
    reference = torch.optim.lr_scheduler.LinearLR(reference_optimizer, start_factor=1.0,
                                                  end_factor=(k * steps + b) / b, total_iters=steps)
    for step in range(steps + 1):
        assert group_lrs(ours) == pytest.approx([reference.get_last_lr()[0]] * 2, rel=1e-9, abs=1e-12)
        assert group_lrs(ours)[0] == pytest.approx(k * step + b)  # the optimizer's own lr plays no part
        advance(ours, 1)
        reference_optimizer.step()
        reference.step()
    advance(ours, 5)
    assert group_lrs(ours) == [1e-6, 1e-6]


def test_absolute_linear_warm_up_and_restart_saw_tooth():
    warm = AbsoluteLinearLR(make_optimizer(), 1e-3, 0.0, min_lr=1e-4)
    lrs = []
    for _ in range(4):
        lrs.append(group_lrs(warm)[0])
        advance(warm, 1)
    assert lrs == pytest.approx([1e-4, 1e-3, 2e-3, 3e-3])
    k, b, min_lr = -0.3, 1.0, 0.05
    period = next(t for t in range(1, 100) if k * t + b < min_lr)  # 4: 1.0, 0.7, 0.4, 0.1, then restart
    saw = AbsoluteLinearLR(make_optimizer(), k, b, min_lr=min_lr, restart=True)
    for step in range(3 * period + 2):
        assert group_lrs(saw)[0] == pytest.approx(k * (step % period) + b)
        advance(saw, 1)


def test_absolute_linear_state_round_trip_and_errors():
    scheduler = AbsoluteLinearLR(make_optimizer(), -1e-3, 1e-2, restart=True)
    advance(scheduler, 7)
    restored = AbsoluteLinearLR(make_optimizer(), 0.0, 1.0)
    restored.load_state_dict(scheduler.state_dict())
    advance(scheduler, 5)
    advance(restored, 5)
    assert group_lrs(restored) == group_lrs(scheduler)
    with pytest.raises(ValueError, match="min_lr must be non-negative"):
        AbsoluteLinearLR(make_optimizer(), -1e-3, 1e-2, min_lr=-1)
    with pytest.raises(ValueError, match="restart=True needs a decaying line"):
        AbsoluteLinearLR(make_optimizer(), 1e-3, 1e-2, restart=True)
