"""UpKern (Roy et al. 2023, Sec. 2.3): start a large-kernel MedNeXt from a trained small-kernel one."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

_MODES = {4: "bilinear", 5: "trilinear"}  # weight rank (out, in / groups, *kernel) -> interpolation


def upkern(target: nn.Module, source: nn.Module) -> nn.Module:
    """Load ``source``'s weights into ``target``, a network of the same configuration but for its kernel size.

    Tensors of equal shape (norms, 1x1 convs, biases) are copied; conv kernels whose spatial size differs (the
    depthwise k x k (x k) kernels) are resized by trilinear interpolation in 3D, bilinear in 2D, as the paper
    does to initialise a kernel-5 MedNeXt from a kernel-3 one. Returns ``target``.
    """
    weights, state = source.state_dict(), target.state_dict()
    if weights.keys() != state.keys():
        differing = sorted(set(weights) ^ set(state))
        raise ValueError(f"upkern: the networks differ in more than their kernel size: {len(differing)} weight(s) "
                         f"exist in only one of them, e.g. {differing[:3]}")
    for key, value in state.items():
        weight = weights[key]
        if weight.shape == value.shape:
            state[key] = weight
        elif weight.ndim in _MODES and weight.shape[:2] == value.shape[:2]:
            state[key] = F.interpolate(weight.float(), size=tuple(value.shape[2:]), mode=_MODES[weight.ndim],
                                       align_corners=False).to(value.dtype)
        else:
            raise ValueError(f"upkern: {key} is {tuple(weight.shape)} in the source but {tuple(value.shape)} in the "
                             "target; only the kernel's spatial size may differ")
    target.load_state_dict(state)
    return target
