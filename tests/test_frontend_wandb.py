"""The W&B frontend in offline mode, its run read back from the transaction log W&B writes for ``wandb sync``."""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imsave

from mipcandy.frontend import open_frontends

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

BLOCK = 32 * 1024  # the LevelDB log layout W&B's transaction log uses: 32 KiB blocks of framed chunks
HEADER = 7  # file header ":W&B" + magic (2 bytes) + version; chunk header: CRC32C (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Every record of a ``run-<id>.wandb`` file, parsed with W&B's own protobuf schema."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # the block's tail is padding
            position += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        chunk = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B offline, writing only under ``tmp_path`` (runs, cache, settings)."""
    for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(f"WANDB_{name}", str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "candy-tests")
    monkeypatch.setenv("WANDB_ENTITY", "lab")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "dir"


def run_log(directory: Path, experiment_id: str) -> list[wandb_internal_pb2.Record]:
    (path,) = directory.glob(f"wandb/offline-run-*-{experiment_id}/run-{experiment_id}.wandb")
    return list(read_records(path))


def test_an_offline_run_logs_each_epoch_once_previews_as_images_and_fails_when_interrupted(offline: Path,
                                                                                         tmp_path: Path) -> None:
    root = tmp_path / "experiments"
    done, stopped = (root / "Dataset001" / "unet" / "fold_0" / name for name in ("20260101-120000-aaaa",
                                                                                 "20260101-130000-bbbb"))
    (done / "preview").mkdir(parents=True)
    preview = done / "preview" / "preview.png"
    imsave(preview, np.random.default_rng(0).random((16, 16, 3)))
    with open_frontends(["wandb"], root=root) as frontends:
        frontends.emit("experiment_created", experiment_id=done.name, folder=done,
                       config={"options": {"lr": 0.01}}, num_parameters=1234)
        for epoch, loss in ((1, 1.2), (2, 0.9), (3, 0.7)):
            score = {"val score": 0.2 * epoch} if epoch > 1 else {"val score": float("nan")}
            if epoch == 2:
                frontends.emit("preview_saved", experiment_id=done.name, epoch=epoch, paths=[preview])
            frontends.emit("epoch_updated", experiment_id=done.name, epoch=epoch,
                           metrics={"combined loss": loss, "worst case": "case_1", **score})
        frontends.emit("experiment_completed", experiment_id=done.name, summary={"best_score": 0.6})
        frontends.emit("experiment_created", experiment_id=stopped.name, folder=stopped, config={})
        frontends.emit("epoch_updated", experiment_id=stopped.name, epoch=1, metrics={"combined loss": 2.0})
        frontends.emit("experiment_interrupted", experiment_id=stopped.name, error="RuntimeError: CUDA out of memory")
    assert frontends.stats()["wandb"].failed == 0
    assert not (tmp_path / "wandb").exists()

    records = run_log(offline, done.name)
    (run,) = [r.run for r in records if r.HasField("run")]
    assert (run.run_id, run.display_name, run.project, run.entity) == (done.name, done.name, "candy-tests", "lab")
    assert run.run_group == "Dataset001/unet/fold_0"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["options"] == {"lr": 0.01} and config["model"] == {"parameters": 1234}
    steps: dict[int, dict[str, object]] = {}
    for record in records:
        if record.HasField("history"):
            step = steps.setdefault(record.history.step.num, {})
            for item in record.history.item:  # an image arrives as one item per field: ("preview/preview", "path")
                key, *field = [item.key] if item.key else list(item.nested_key)
                value = json.loads(item.value_json)
                if field:
                    step.setdefault(key, {})[field[0]] = value
                else:
                    step[key] = value
    logged = {step: {k: v for k, v in items.items() if not k.startswith("_")} for step, items in steps.items()}
    assert logged[1] == {"combined loss": 1.2}  # that epoch's values only: no NaN score, no text
    assert logged[2]["combined loss"] == 0.9 and logged[2]["val score"] == 0.4
    image = logged[2]["preview/preview"]
    assert image["_type"] == "image-file" and (image["width"], image["height"]) == (16, 16)
    (media,) = offline.glob(f"wandb/offline-run-*-{done.name}/files/{image['path']}")
    assert media.stat().st_size == image["size"]
    assert logged[3] == {"combined loss": 0.7, "val score": pytest.approx(0.6)}
    assert [r.exit.exit_code for r in records if r.HasField("exit")] == [0]
    assert [r.exit.exit_code for r in run_log(offline, stopped.name) if r.HasField("exit")] == [1]
