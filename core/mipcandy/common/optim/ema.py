"""An exponential moving average of a model's weights, to validate and checkpoint smoother weights."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ExponentialMovingAverage(nn.Module):
    """A true EMA: each ``update(model)`` sets ``ema = decay * ema + (1 - decay) * param``.

    The average starts as a copy of ``model``, so after N updates with weights θ_1..θ_N
    ``ema = decay^N θ_0 + (1 - decay) Σ_k decay^(N-k) θ_k``: recent weights count most, unlike the equal-weight
    mean of ``torch.optim.swa_utils.AveragedModel`` without an averaging function. Buffers (normalisation
    running statistics, counters) are copied, not averaged. With ``warmup=True`` the decay at update n
    (1-based) is ``min(decay, (1 + n) / (10 + n))``, so that early averages are not dominated by the random
    initialisation; it is off by default. ``module`` is the averaged network (in eval mode) and the state dict is
    a flat tensor dict (``module.*`` plus ``num_updates``), fit for safetensors.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = False) -> None:
        super().__init__()
        if not 0 <= decay <= 1:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        self.decay, self.warmup = float(decay), warmup
        self.module = copy.deepcopy(getattr(model, "_orig_mod", model)).eval().requires_grad_(False)
        first = next(iter(self.module.parameters()), None)
        device = first.device if first is not None else None
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long, device=device))

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = int(self.num_updates) + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights and copy its buffers."""
        weight = 1 - self.current_decay()
        averaged, current = self._paired(self.module.named_parameters(), model.parameters(), "parameters")
        floating = [(mine, theirs) for mine, theirs in zip(averaged, current, strict=True) if mine.is_floating_point()]
        if floating:
            torch._foreach_lerp_([mine for mine, _ in floating], [theirs for _, theirs in floating], weight)
        for mine, theirs in zip(averaged, current, strict=True):
            if not mine.is_floating_point():
                mine.copy_(theirs)
        for mine, theirs in zip(*self._paired(self.module.named_buffers(), model.buffers(), "buffers"), strict=True):
            mine.copy_(theirs)
        self.num_updates += 1

    @staticmethod
    def _paired(named_mine: Any, theirs: Any, kind: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Match the copy's tensors with the model's by position, checking count and shapes."""
        named = list(named_mine)
        others = [t.detach() for t in theirs]
        if len(named) != len(others):
            raise ValueError(f"the model has {len(others)} {kind} but the EMA copy has {len(named)}; update the EMA "
                             "with the model it was built from")
        for (name, mine), other in zip(named, others, strict=True):
            if mine.shape != other.shape:
                raise ValueError(f"{kind[:-1]} {name!r} has shape {tuple(other.shape)} in the model but "
                                 f"{tuple(mine.shape)} in the EMA copy; update the EMA with the model it was "
                                 "built from")
        return [t for _, t in named], others

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
