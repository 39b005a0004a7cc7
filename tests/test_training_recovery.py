"""Acceptance test of exact recovery: a run killed with SIGKILL at random moments (including inside the state
write) and resumed ends with weights bitwise equal to an uninterrupted run with the same seed."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mipcandy.training.checkpoint import load_state

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, ITERATIONS = 4, 3

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    from torch import nn

    torch.set_num_threads(1)
    from mipcandy.data.dataset import dataset_from_tensors
    from mipcandy.data.geometry import Geometry
    from mipcandy.data.roi import RandomROIDataset
    from mipcandy.data.synthetic import synthetic_case
    from mipcandy.presets import SegmentationTrainer
    from mipcandy.training.options import TrainingOptions

    # Fault injection, from the test: pause or SIGKILL between writing a training state's temporary file and
    # renaming it into place ("sleep:SECONDS", or "kill:N" during the N-th state write of this process).
    import os, signal, time
    import safetensors.torch

    fault, writes, save_file = sys.argv[4], [0], safetensors.torch.save_file

    def faulty_save_file(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        if (metadata or {}).get("format") != "mipcandy.training-state":
            return
        writes[0] += 1
        if fault.startswith("sleep:"):
            time.sleep(float(fault.split(":", 1)[1]))
        elif fault.startswith("kill:") and writes[0] == int(fault.split(":", 1)[1]):
            os.kill(os.getpid(), signal.SIGKILL)

    safetensors.torch.save_file = faulty_save_file

    cases = {}
    for i in range(3):
        image, label = synthetic_case(i, shape=(24, 24), spacing=(1, 1), num_classes=3)
        cases[f"case{i}"] = ((image - image.mean()) / image.std(), label, Geometry.identity(2, (1.0, 1.0)))
    data = dataset_from_tensors(cases)
    train = RandomROIDataset(data.subset(["case0", "case1"]), 2, patch_shape=(16, 16), seed=3)


    class Tiny(SegmentationTrainer):
        default_options = TrainingOptions(num_classes=3, preview=False, plot_every=1000)

        def build_network(self, example_shape):
            return nn.Sequential(nn.Conv2d(example_shape[0], 4, 3, padding=1), nn.Dropout(0.2), nn.ReLU(),
                                 nn.Conv2d(4, 3, 1))


    root, mode, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    trainer = Tiny(root, train, data.subset(["case2"]))
    if mode == "train":
        trainer.train(epochs, iterations_per_epoch=ITERATIONS, seed=11, deterministic=True, ema=True, ema_decay=0.9)
    else:
        (folder,) = (root / "data" / "Tiny").glob("2*")
        trainer.recover_from(folder).continue_training(epochs)
    print("FINISHED")
""").replace("ITERATIONS", str(ITERATIONS))


def _run(script: Path, root: Path, mode: str, *, epochs: int = EPOCHS, fault: str = "none",
         kill_after: float | None = None) -> subprocess.CompletedProcess | None:
    """Run the training script; with ``kill_after`` SIGKILL it after that many seconds (None if it was killed)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]),
                "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(root), mode, str(epochs), fault], env=full_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8")
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            return None
    out, err = process.communicate(timeout=240)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert result.returncode in (0, -signal.SIGKILL), result.stderr[-3000:]
    return result


def _experiments(root: Path) -> list[Path]:
    """The experiment folders under ``root`` (a run killed while creating one leaves only a hidden folder)."""
    return sorted((root / "data" / "Tiny").glob("2*"))


def _final_state(root: Path) -> dict:
    (folder,) = _experiments(root)
    return load_state(folder / "training_state.safetensors") | {"_best": load_file(folder /
                                                                                   "checkpoint_best.safetensors")}


def _assert_same_run(expected: dict, actual: dict) -> None:
    assert actual["epoch"] == expected["epoch"] == EPOCHS
    for part in ("model", "ema", "_best"):
        assert expected[part].keys() == actual[part].keys()
        for key, value in expected[part].items():
            assert torch.equal(value, actual[part][key]), f"{part}.{key} differs after recovery"
    for key, buffer in expected["optimizer"]["state"].items():
        assert torch.equal(buffer["momentum_buffer"], actual["optimizer"]["state"][key]["momentum_buffer"])
    assert expected["tracker"] == actual["tracker"]
    for column in ("combined loss", "val score", "learning rate"):
        assert expected["history"][column] == actual["history"][column]
    assert expected["stream_position"] == actual["stream_position"] == EPOCHS * ITERATIONS


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    folder = tmp_path_factory.mktemp("reference")
    script = folder / "train_script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    started = time.perf_counter()
    result = _run(script, folder / "runs", "train")
    assert result is not None and "FINISHED" in result.stdout
    return script, _final_state(folder / "runs"), time.perf_counter() - started


def test_killed_inside_the_state_write_resumes_bitwise(reference, tmp_path: Path) -> None:
    script, expected, _ = reference
    runs = tmp_path / "runs"
    _run(script, runs, "train", fault="kill:2")  # dies while writing epoch 2's state
    (folder,) = _experiments(runs)
    assert load_state(folder / "training_state.safetensors")["epoch"] == 1
    assert list(folder.glob(".training_state*")), "the killed write should have left its temporary file"
    result = _run(script, runs, "resume")
    assert result is not None and "FINISHED" in result.stdout and "Resumed" in result.stdout
    assert not list(folder.glob(".training_state*"))
    _assert_same_run(expected, _final_state(runs))


def test_killed_at_random_moments_resumes_bitwise(reference, tmp_path: Path) -> None:
    script, expected, duration = reference
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    runs = tmp_path / "runs"
    mode, kills = "train", 0
    slow_writes = "sleep:0.2"  # widens the write window so that kills often land inside it
    while kills < 2:
        # random delays over the whole run, startup included
        if _run(script, runs, mode, fault=slow_writes, kill_after=rng.uniform(0.5, duration + 1.0)) is None:
            kills += 1
        if _experiments(runs):
            mode = "resume"
        if mode == "resume" and (state := _experiments(runs)[0] / "training_state.safetensors").is_file() \
                and load_state(state)["epoch"] == EPOCHS:
            break
    result = _run(script, runs, mode)
    assert result is not None and "FINISHED" in result.stdout, f"seed {seed}"
    _assert_same_run(expected, _final_state(runs))
