"""Random draws for the transforms, all from one explicit CPU ``torch.Generator``.

Decisions and parameters depend only on the generator and the batch's (B, C) shape, never on the data or the device,
so a seed gives the same draws on CPU and GPU; random fields (noise) come from a device generator seeded from it.
"""
from __future__ import annotations

import torch
from torch import Tensor

_SEED_LIMIT = 2 ** 62


def bernoulli(p: float, shape: int | tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Boolean decisions, True with probability ``p``."""
    return torch.rand(shape, generator=generator, dtype=torch.float64) < p


def uniform(bounds: tuple[float, float], shape: int | tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Float64 draws from U(low, high)."""
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def two_sided(bounds: tuple[float, float], shape: int | tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Factors below and above 1 with equal chance, as batchgenerators' BGContrast draws them.

    Half the draws come from U(low, 1) and half from U(1, high), so shrinking and stretching are equally likely even
    for an asymmetric range like (0.7, 1.5); a range that does not straddle 1 is drawn uniformly.
    """
    low, high = bounds
    below = bernoulli(0.5, shape, generator)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    if not low < 1.0 < high:
        return low + (high - low) * u
    return torch.where(below, low + (1.0 - low) * u, 1.0 + (high - 1.0) * u)


def field_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` for large random fields, seeded from the CPU generator (reproducible per device)."""
    seed = int(torch.randint(0, _SEED_LIMIT, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)
