"""The core's default hook implementations, used when the selected bundle does not provide its own.

Registered first and marked ``trylast``, so a bundle's implementation always answers before these.
torch is imported inside the functions: registering this module must stay cheap.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mipcandy.hookspecs import hookimpl

SGD_DEFAULTS: dict[str, Any] = {"lr": 1e-2, "momentum": 0.99, "weight_decay": 3e-5, "nesterov": True}


@hookimpl(trylast=True)
def build_optimizer(params: Iterable[Any], options: Mapping[str, Any]) -> Any:
    """nnU-Net's optimizer: SGD, lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5."""
    import torch

    settings = {key: options.get(key, value) for key, value in SGD_DEFAULTS.items()}
    return torch.optim.SGD(params, **settings)


@hookimpl(trylast=True)
def build_scheduler(optimizer: Any, num_epochs: int) -> Any:
    """nnU-Net's schedule: poly decay (exponent 0.9) from the optimizer's lr to 0, once per epoch."""
    from mipcandy.common.optim import PolyLRScheduler

    return PolyLRScheduler(optimizer, optimizer.param_groups[0]["lr"], num_epochs)


@hookimpl(trylast=True)
def backward(images: Any, labels: Any, toolbox: Any) -> tuple[float, dict[str, float]]:
    """Forward through ``toolbox.model``, score with ``toolbox.criterion`` and back-propagate.

    Scales the loss with ``toolbox.grad_scaler`` when there is one (float16 mixed precision).
    """
    outputs = toolbox.model(images)
    loss, metrics = toolbox.criterion(outputs, labels)
    scaler = toolbox.grad_scaler
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return float(loss.detach()), {key: float(value) for key, value in metrics.items()}

