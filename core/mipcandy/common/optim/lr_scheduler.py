"""Learning-rate schedules: nnU-Net's polynomial decay (safe past its horizon, extendable when a run is continued)
and an absolute linear schedule."""
from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class PolyLRScheduler(LRScheduler):
    """``lr = initial_lr * (1 - step / max_steps) ** exponent`` for every parameter group (nnU-Net, exponent 0.9).

    nnU-Net steps it once per epoch, so ``max_steps`` is the number of epochs; per-iteration stepping works with
    ``max_steps = epochs * iterations``. From ``max_steps`` on the lr is exactly 0: never negative or complex.

    The horizon is part of the state. To continue a run for longer than planned, build the scheduler, load the
    saved state (which restores the step and the old horizon), then call ``extend(new_max_steps)``: by default
    the remaining decay is stretched so that the lr is continuous at the current step and reaches 0 at the new
    horizon (see ``extend``). Internally the curve is ``(base * (max_steps - step) / (max_steps - anchor)) **
    exponent`` from an anchor step, which is (step 0, base 1) until the first extension.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float, max_steps: int, *, exponent: float = 0.9) -> None:
        if initial_lr < 0:
            raise ValueError(f"initial_lr must be non-negative, got {initial_lr}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if exponent <= 0:
            raise ValueError(f"exponent must be positive, got {exponent}")
        self.initial_lr, self.max_steps, self.exponent = float(initial_lr), int(max_steps), float(exponent)
        self.anchor_step, self.anchor_base = 0, 1.0
        super().__init__(optimizer)

    def base(self, step: int) -> float:
        """The quantity raised to ``exponent`` at ``step``; clamped to [0, 1], 0 from the horizon on."""
        remaining = max(0, self.max_steps - step) / (self.max_steps - self.anchor_step)
        return min(1.0, self.anchor_base * remaining)

    def lr_at(self, step: int) -> float:
        """The learning rate the schedule gives at ``step``."""
        return self.initial_lr * self.base(step) ** self.exponent

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch)] * len(self.optimizer.param_groups)

    _get_closed_form_lr = get_lr

    def extend(self, new_max_steps: int, *, continuous: bool = True) -> None:
        """Grow the horizon to ``new_max_steps`` (a no-op when it is unchanged).

        ``continuous=True`` keeps the current lr and stretches the rest of the poly decay so that it reaches 0 at
        the new horizon: from step s, ``lr_t = lr_s * ((new - t) / (new - s)) ** exponent``. A schedule that
        already reached lr 0 cannot be continued that way and raises; ``continuous=False`` re-plans the curve
        as if ``new_max_steps`` had been planned from the start (nnU-Net's behaviour when continuing with more
        epochs), which raises the lr at the current step.
        """
        if new_max_steps < self.max_steps:
            raise ValueError(f"extend() only grows the horizon: {new_max_steps} < current {self.max_steps}")
        if new_max_steps == self.max_steps:
            return
        step = self.last_epoch
        if new_max_steps <= step:
            raise ValueError(f"the new horizon {new_max_steps} is not after the current step {step}; "
                             "the learning rate would stay 0")
        if continuous:
            base = self.base(step)
            if base == 0:
                raise ValueError(f"the schedule already reached lr 0 at step {step} (horizon {self.max_steps}), so "
                                 "a continuous extension would keep it at 0; pass continuous=False to re-plan the "
                                 f"poly curve for {new_max_steps} steps")
            self.anchor_step, self.anchor_base = step, base
        else:
            self.anchor_step, self.anchor_base = 0, 1.0
        self.max_steps = int(new_max_steps)
        self._apply_current_lr()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore step, horizon and shape, and put the restored lr into the optimizer."""
        missing = {"initial_lr", "max_steps", "exponent", "anchor_step", "anchor_base", "last_epoch"} - set(state_dict)
        if missing:
            raise ValueError(f"not a PolyLRScheduler state dict: it lacks {sorted(missing)}")
        super().load_state_dict(state_dict)
        self._apply_current_lr()

    def _apply_current_lr(self) -> None:
        lr = self.lr_at(self.last_epoch)
        for group in self.optimizer.param_groups:
            if hasattr(group["lr"], "fill_"):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)


class AbsoluteLinearLR(LRScheduler):
    """``lr = k * step + b``, never below ``min_lr``: a linear warm-up (k > 0) or decay (k < 0) in absolute terms.

    The lr does not depend on the optimizer's initial lr, so a schedule reads the same whatever optimizer it
    drives. With ``restart=True`` a decay starts again from ``b`` instead of resting at ``min_lr``: the lr is
    ``k * (step mod period) + b``, where ``period`` is the first step at which the line falls below ``min_lr``
    (a saw-tooth, for cyclic schedules). Every value is part of the state dict, so a resumed run continues the
    same line.
    """

    def __init__(self, optimizer: Optimizer, k: float, b: float, *, min_lr: float = 1e-6,
                 restart: bool = False) -> None:
        if min_lr < 0:
            raise ValueError(f"min_lr must be non-negative, got {min_lr}")
        if restart and not (k < 0 and b >= min_lr):
            raise ValueError(f"restart=True needs a decaying line that starts at or above min_lr (k < 0, b >= "
                             f"min_lr), got k={k}, b={b}, min_lr={min_lr}; without a decay there is nothing to restart")
        self.k, self.b, self.min_lr, self.restart = float(k), float(b), float(min_lr), restart
        self.period = self._period() if restart else None
        super().__init__(optimizer)

    def _line(self, step: int) -> float:
        return self.k * step + self.b

    def _period(self) -> int:
        """The first step whose line value is below ``min_lr`` (float-exact: checked on the same expression)."""
        period = max(1, int((self.b - self.min_lr) / -self.k) + 1)
        while self._line(period) >= self.min_lr:
            period += 1
        while period > 1 and self._line(period - 1) < self.min_lr:
            period -= 1
        return period

    def lr_at(self, step: int) -> float:
        """The learning rate the schedule gives at ``step``."""
        if self.period is not None:
            step %= self.period
        return max(self.min_lr, self._line(step))

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch)] * len(self.optimizer.param_groups)

    _get_closed_form_lr = get_lr
