"""Files the project writes (checkpoints, states, caches, images, reports) get the user's umask like any other file,
and the LICENSE ships with both distributions."""
from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from mipcandy.atomic import atomic_path, atomic_write_text
from mipcandy.data.io import fast_save, save_image
from mipcandy.layer import save_weights
from mipcandy.training.checkpoint import save_state

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_text(folder: Path) -> list[Path]:
    atomic_write_text(folder / "config.json", "{}")
    return [folder / "config.json"]


def write_checkpoint(folder: Path) -> list[Path]:
    save_weights(torch.nn.Linear(2, 3), folder / "checkpoint_best.safetensors")
    return [folder / "checkpoint_best.safetensors"]


def write_state(folder: Path) -> list[Path]:
    save_state(folder / "state.safetensors", {"epoch": 1, "w": torch.ones(2)})
    return [folder / "state.safetensors"]


def write_cache(folder: Path) -> list[Path]:
    fast_save(torch.ones(1, 2, 2), folder / "case.safetensors")
    return [folder / "case.safetensors"]


def write_torch(folder: Path) -> list[Path]:
    with atomic_path(folder / "model.pt") as tmp:
        torch.save({"w": torch.ones(2)}, tmp)
    return [folder / "model.pt"]


def write_images(folder: Path) -> list[Path]:
    save_image(torch.ones(1, 2, 3, 4), folder / "case.nii.gz")
    save_image(torch.ones(1, 2, 3, 4), folder / "case.mhd")  # header + data pair, staged in a private folder
    return [folder / "case.nii.gz", folder / "case.mhd", folder / "case.raw"]


WRITERS: dict[str, Callable[[Path], list[Path]]] = {
    "text": write_text, "checkpoint": write_checkpoint, "training state": write_state, "cache": write_cache,
    "torch.save": write_torch, "images": write_images,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, writer: str) -> None:
    reference = tmp_path / "plain.txt"
    reference.write_text("made by open()", encoding="utf-8")  # the reference: what any program creates
    assert mode(reference) == 0o666 & ~umask
    for path in WRITERS[writer](tmp_path / "out"):
        assert mode(path) == mode(reference), f"{writer}: {path.name} is {oct(mode(path))}"


def test_replacing_a_file_gives_it_the_umask_mode(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "metrics.csv"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o600)
    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new" and mode(target) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


@pytest.mark.parametrize("project", [ROOT, ROOT / "plugins" / "unet"])
def test_distributions_declare_and_ship_the_license(project: Path) -> None:
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    text = (project / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
