"""Seeding and capturing every random number generator a training run draws from.

Exact recovery needs the RNG states of Python, NumPy and torch (CPU and every CUDA device) at the end of an
epoch; :func:`capture_rng_state` returns them as plain data (tensors plus JSON-able values) that the checkpoint
stores, and :func:`restore_rng_state` puts them back. Determinism is opt-in (``deterministic=True``): cuDNN's
benchmark mode and non-deterministic kernels are faster, and the reference's always-on determinism cost speed.
"""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def set_seed(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); with ``deterministic`` also force deterministic kernels.

    ``deterministic`` sets ``cudnn.deterministic``, turns cuDNN benchmarking off and calls
    ``torch.use_deterministic_algorithms(True)`` (which needs ``CUBLAS_WORKSPACE_CONFIG`` on CUDA; it is set to
    ``:4096:8`` when missing).
    """
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def capture_rng_state() -> dict[str, Any]:
    """Every generator's state: ``python`` and ``numpy`` as JSON-able values, ``torch``/``cuda`` as tensors."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _as_tuple(value: Any) -> Any:
    """Lists (as JSON brings them back) into the nested tuples ``random.setstate`` requires."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned (CUDA states only when CUDA is in use here)."""
    random.setstate(_as_tuple(state["python"]))
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32) if isinstance(saved["keys"], torch.Tensor) else \
        np.asarray(saved["keys"], dtype=np.uint32)
    np.random.set_state((saved["kind"], keys, saved["position"], saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])
