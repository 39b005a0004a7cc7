"""Training on several processes with ``torch.distributed``: one process per GPU (or CPU), launched by torchrun.

torchrun starts W copies of one command and tells each who it is through the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). A run that finds ``WORLD_SIZE > 1`` joins the
process group (NCCL on CUDA, gloo on the CPU), trains on the GPU of its local rank with its network wrapped in
``DistributedDataParallel`` (gradients averaged over the ranks during backward), and:

- reads its share of the batches: rank r takes batches r, r + W, r + 2W... of the
  :class:`~mipcandy.data.roi.RandomROIDataset` (:class:`RankBatches`), so one step of W ranks trains on exactly
  the W consecutive batches one process would read; the global batch is W x ``batch_size``, drawn from the same
  ``(seed, index)`` sequence whatever W is;
- validates cases r, r + W... and gathers every rank's results (:func:`gather_validation`), so that all ranks
  take the same decisions (best checkpoint, early stop);
- converts BatchNorm to SyncBatchNorm on GPUs (:func:`sync_batch_norm`) and weighs every deep supervision head
  (:func:`every_head_weighted`);
- writes, prints and emits only on rank 0 (``ExperimentWriter(is_main_process=...)``).

Collectives use PyTorch's default timeouts (NCCL 10 min, gloo 30 min). Under torchrun a rank that dies ends the
job sooner: its peers' next collective fails (at once with gloo, whose connection closes), and the elastic agent
sees the failed worker within ``--monitor-interval`` (0.1 s) and terminates the others on its node (SIGTERM);
atomic checkpoints leave the last complete epoch to resume.
"""
from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from mipcandy.common.optim import deep_supervision_weights
from mipcandy.data.roi import RandomROIDataset
from mipcandy.layer import auto_device, unwrap_compiled
from mipcandy.training.validation import ValidationResult

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
T = TypeVar("T")


class DistributedError(ValueError):
    """The launch environment or the run's inputs do not allow a distributed run; says what to change."""


@dataclass(frozen=True)
class World:
    """Who this process is among the ``size`` processes of a launch."""

    rank: int
    local_rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the experiment folder and talks to the user."""
        return self.rank == 0


@dataclass(frozen=True)
class Session:
    """A joined process group: the world, and this rank's device and backend."""

    world: World
    device: torch.device
    backend: str


def launched_world(environ: Mapping[str, str] | None = None) -> World | None:
    """The world torchrun describes in the environment; ``None`` outside torchrun.

    :raises DistributedError: when only some launch variables are set, or they are not consistent.
    """
    environ = os.environ if environ is None else environ
    present = [name for name in LAUNCH_VARIABLES if name in environ]
    if not present:
        return None
    if len(present) < len(LAUNCH_VARIABLES):
        missing = sorted(set(LAUNCH_VARIABLES) - set(present))
        raise DistributedError(f"{', '.join(present)} set but {', '.join(missing)} not: launch distributed runs "
                               "with torchrun (python -m torch.distributed.run), which sets them all")
    try:
        rank, size, local_rank = (int(environ[name]) for name in LAUNCH_VARIABLES)
    except ValueError:
        values = ", ".join(f"{name}={environ[name]!r}" for name in LAUNCH_VARIABLES)
        raise DistributedError(f"the launch variables must be integers, got {values}") from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise DistributedError(f"inconsistent launch: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank} "
                               "(need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0)")
    return World(rank, local_rank, size)


def is_main_process() -> bool:
    """Whether this process is rank 0 of its launch (always, outside torchrun)."""
    world = launched_world()
    return world is None or world.is_main


def rank_device(device: str | torch.device, world: World) -> torch.device:
    """This rank's device: ``cuda:<LOCAL_RANK>`` (``cuda:0`` where each process sees one GPU), or the CPU.

    Any CUDA index in ``device`` is replaced: under torchrun the local rank picks the GPU.
    """
    device = auto_device() if device == "auto" else torch.device(device)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DistributedError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {device}; "
                               "pass device='cuda' or 'cpu'")
    count = torch.cuda.device_count()
    index = 0 if count == 1 else world.local_rank
    if index >= count:
        raise DistributedError(f"LOCAL_RANK {world.local_rank} has no GPU: this node shows {count}; start at most "
                               f"{count} processes per node (torchrun --nproc_per_node={count})")
    return torch.device("cuda", index)


def join(device: str | torch.device, *, require: bool = False) -> Session | None:
    """Join the launch's process group, or ``None`` for a single process (a torchrun launch of one process is one).

    The first call creates the group (NCCL for CUDA devices, gloo for the CPU) for the rest of the process, which
    destroys it at exit: runs after the first one (``--fold cv``) reuse it, as a group destroyed and created again
    in one launch would wait forever for its peers. With ``require``, a process outside a distributed launch is
    refused.
    """
    world = launched_world()
    if world is None and require:
        raise DistributedError("--ddp needs a distributed launch (RANK, WORLD_SIZE and LOCAL_RANK unset): run "
                               "torchrun --nproc_per_node=N -m mipcandy train ...")
    if world is None or world.size == 1:
        return None
    device = rank_device(device, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy)
    return Session(world, device, str(dist.get_backend()))


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(session: Session | None) -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if session is not None:
        dist.barrier()


@contextmanager
def main_first(session: Session | None) -> Iterator[None]:
    """Rank 0 runs the block first, the others after it (e.g. rank 0 builds a cache the others then open)."""
    if session is not None and not session.world.is_main:
        dist.barrier()
    yield
    if session is not None and session.world.is_main:
        dist.barrier()


def from_main(value: T, session: Session) -> T:
    """Rank 0's ``value`` (any picklable object) on every rank, e.g. the options with the seed rank 0 drew."""
    message = [value if session.world.is_main else None]
    dist.broadcast_object_list(message, src=0)
    return message[0]


def broadcast_folder(folder: Path | None, session: Session) -> Path:
    """Rank 0's ``folder`` on every rank: one experiment folder per run, created by rank 0 only."""
    name = from_main(None if folder is None else str(folder), session)
    if name is None:
        raise DistributedError("rank 0 sent no experiment folder")
    return Path(name)


class RankBatches(RandomROIDataset):
    """Batches ``rank, rank + W, rank + 2W...`` of a :class:`~mipcandy.data.roi.RandomROIDataset`.

    A view: item ``k`` is ``batches[k * W + rank]``, built by the whole dataset, so patches and augmentation stay
    seeded by ``(seed, global index)``. It is a ``RandomROIDataset`` by type so that the batch stream seeks it
    exactly (any index is valid) instead of replaying batches on resume. ``len()`` is this rank's share of one
    pass.
    """

    def __init__(self, batches: RandomROIDataset, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return -(-len(self.batches) // self.world_size)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if index < 0:
            raise IndexError(f"Batch index must be >= 0, got {index}")
        return self.batches[index * self.world_size + self.rank]

    def settings(self) -> dict:
        """The whole dataset's settings (what the run records)."""
        return self.batches.settings()


def rank_share(train_data: RandomROIDataset | DataLoader, world: World) -> RandomROIDataset | DataLoader:
    """What rank ``world.rank`` trains on: its :class:`RankBatches`, or a DataLoader already sharded by a
    ``DistributedSampler``.

    :raises DistributedError: for a DataLoader without a ``DistributedSampler`` (every rank would train on the
        same batches).
    """
    if isinstance(train_data, RandomROIDataset):
        return RankBatches(train_data, world.rank, world.size)
    if isinstance(train_data.sampler, DistributedSampler):
        return train_data
    raise DistributedError(f"a DataLoader with a {type(train_data.sampler).__name__} would feed every one of the "
                           f"{world.size} ranks the same batches: train on a RandomROIDataset (sharded "
                           "automatically) or give the DataLoader a torch.utils.data.DistributedSampler")


def shard(count: int, world: World) -> range:
    """The indices ``rank, rank + W...`` below ``count`` that this rank handles (e.g. validation cases)."""
    return range(world.rank, count, world.size)


def mean_over_ranks(values: Mapping[str, float], session: Session) -> dict[str, float]:
    """Every rank's ``values`` averaged over the ranks (each rank must pass the same keys)."""
    keys = sorted(values)
    device = session.device if session.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / session.world.size).tolist(), strict=True))


def gather_validation(local: ValidationResult, session: Session, *, keep_prediction: bool) -> ValidationResult:
    """All ranks' validated cases, in case order, on every rank; rank 0 also receives the worst case's prediction
    (when ``keep_prediction``), from the rank that holds it.

    The global worst case (lowest score, first in case order on ties) is necessarily the worst of its own rank, so
    its prediction is still there; only that one label map travels.
    """
    gathered: list[list | None] = [None] * session.world.size
    dist.all_gather_object(gathered, [replace(case, prediction=None) for case in local.cases])
    result = ValidationResult(sorted((case for part in gathered for case in part or ()), key=lambda c: c.index))
    worst = result.worst
    if not keep_prediction or worst is None:
        return result
    mine = next((case.prediction for case in local.cases if case.index == worst.index), None)
    received: list | None = [None] * session.world.size if session.world.is_main else None
    dist.gather_object(mine, received, dst=0)
    if received is not None:
        worst.prediction = next((p for p in received if p is not None), None)
    return result


def sync_batch_norm(model: nn.Module, device: torch.device) -> tuple[nn.Module, str | None]:
    """SyncBatchNorm in place of BatchNorm on CUDA (statistics over the global batch), and a note for the log.

    PyTorch synchronises batch statistics on GPUs only: on the CPU each rank keeps normalising its own batch.
    """
    if not any(isinstance(module, BATCH_NORMS) for module in model.modules()):
        return model, None
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model), "BatchNorm layers synchronised across ranks " \
                                                              "(SyncBatchNorm)"
    return model, f"BatchNorm statistics stay per rank on {device.type} (SyncBatchNorm runs on GPUs only)"


def every_head_weighted(weights: Sequence[float] | None, num_outputs: int) -> tuple[float, ...] | None:
    """Deep supervision weights (``None``: nnU-Net's) with each 0 raised to ``1e-6``; ``None`` when none was 0.

    A head weighing 0 is computed but sends no gradient, and DDP stops at the next step (it expects a gradient
    from every parameter in the graph); nnU-Net weighs its lowest head 1e-6 under DDP for the same reason.
    """
    chosen = list(weights) if weights is not None else deep_supervision_weights(num_outputs)
    if all(w != 0 for w in chosen):
        return None
    raised = [w or 1e-6 for w in chosen]
    return tuple(w / sum(raised) for w in raised)


def wrap(model: nn.Module, session: Session) -> DistributedDataParallel:
    """``model`` in DistributedDataParallel on this rank's device (parameters broadcast from rank 0).

    ``static_graph``: every step runs the same graph, and some parameters may take no part in it (deep
    supervision heads while it is off); DDP learns that set at the first step instead of failing at the second,
    without ``find_unused_parameters``' search of the graph at every step.
    """
    device_ids = [session.device.index] if session.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, static_graph=True)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network under any ``torch.compile`` and ``DistributedDataParallel`` wrappers (plain weight names)."""
    while True:
        inner = model.module if isinstance(model, DistributedDataParallel) else unwrap_compiled(model)
        if inner is model:
            return model
        model = inner
