"""The hooks through which MIP Candy discovers and uses the V-Net bundle. torch loads on first build."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mipcandy import hookimpl

LOSSES = ("dice_ce", "dice")  # the core's Dice + cross-entropy criterion (default), the paper's Dice loss
OPTIONS = ("act", "base_ch", "down_convs", "loss", "norm", "up_convs")


def _loss(options: Mapping[str, Any]) -> str:
    loss = options.get("loss", LOSSES[0])
    if loss not in LOSSES:
        raise ValueError(f"vnet: option loss must be one of {list(LOSSES)} ('dice' is the paper's objective), "
                         f"got {loss!r}")
    return loss


@hookimpl
def bundle_info() -> dict[str, Any]:
    return {"summary": "V-Net: residual 5x5x5 stages, 16-256 channels, optional Dice loss (3DV 2016), 3D",
            "dimensions": [3], "variants": []}


@hookimpl
def build_network(example_shape: Sequence[int], num_classes: int, options: Mapping[str, Any]) -> Any:
    """The paper's V-Net for a (C, D, H, W) input; ``loss`` is read by ``backward``, the rest goes to the builder."""
    from candy_vnet.vnet import make_vnet3d

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"vnet: unknown option(s) {unknown}; the options are {list(OPTIONS)}")
    _loss(options)
    shape = tuple(example_shape)
    if len(shape) != 4:
        raise ValueError(f"vnet: V-Net is 3D only; expected an input shaped (C, D, H, W), got {shape}")
    return make_vnet3d(shape[0], num_classes, **{k: v for k, v in options.items() if k != "loss"})


@hookimpl
def backward(images: Any, labels: Any, toolbox: Any,
             options: Mapping[str, Any]) -> tuple[float, dict[str, float]] | None:
    """With ``loss="dice"``, one step on the paper's Dice loss (eq. 1); otherwise None, so the core's criterion
    answers."""
    if _loss(options) != "dice":
        return None
    from candy_vnet.loss import dice_loss

    outputs = toolbox.model(images)
    if isinstance(outputs, (list, tuple)):
        raise ValueError("vnet: loss='dice' scores one output per batch; turn deep supervision off")
    loss = dice_loss(outputs, labels)
    scaler = toolbox.grad_scaler
    (scaler.scale(loss) if scaler is not None else loss).backward()
    value = float(loss.detach())
    return value, {"dice loss": value}
