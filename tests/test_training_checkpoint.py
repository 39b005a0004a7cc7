"""The training-state file: exact round trip of nested state, RNG capture/restore, damaged files."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mipcandy.training.checkpoint import load_state, save_state
from mipcandy.training.seed import capture_rng_state, restore_rng_state, set_seed


def test_round_trip_keeps_types_and_bits(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "pair": (1, 2.5), "nan": float("nan"), "inf": -float("inf"),
             "history": {"loss": [1.0, 0.5]}, "array": np.arange(3), "none": None}
    save_state(tmp_path / "s.safetensors", state)
    loaded = load_state(tmp_path / "s.safetensors")
    assert loaded["pair"] == (1, 2.5) and loaded["history"] == {"loss": [1.0, 0.5]} and loaded["none"] is None
    assert np.isnan(loaded["nan"]) and loaded["inf"] == -float("inf")
    assert torch.equal(loaded["array"], torch.arange(3))
    assert set(loaded["optimizer"]["state"]) == {0, 1}  # integer keys survive
    for key, buffers in optimizer.state_dict()["state"].items():
        assert torch.equal(buffers["momentum_buffer"], loaded["optimizer"]["state"][key]["momentum_buffer"])
    optimizer.load_state_dict(loaded["optimizer"])


def test_rng_states_are_restored(tmp_path: Path) -> None:
    set_seed(123)
    save_state(tmp_path / "rng.safetensors", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    set_seed(7)
    restore_rng_state(load_state(tmp_path / "rng.safetensors")["rng"])
    actual = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[:2] == actual[:2] and torch.equal(expected[2], actual[2])


def test_foreign_and_damaged_files_are_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="weights.safetensors is not a mipcandy.training-state"):
        load_state(tmp_path / "weights.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(ValueError, match="broken.safetensors is not a readable training state"):
        load_state(tmp_path / "broken.safetensors")
    with pytest.raises(TypeError, match="cannot store object at 'state.bad'"):
        save_state(tmp_path / "x.safetensors", {"bad": object()})
