"""An endless stream of training batches whose position can be saved and restored exactly.

nnU-Net defines an epoch as a fixed number of iterations (250), not a pass over the data. A
:class:`~mipcandy.data.roi.RandomROIDataset` item is a whole batch that depends only on ``(seed, index)`` and
any index >= 0 is valid, so the stream simply reads items ``position, position + 1, ...``: restoring the
position restores the data exactly, whatever the number of workers. Any other ``DataLoader`` is cycled pass
after pass; its position is restored by setting its sampler's epoch (when it has ``set_epoch``, as
:class:`~mipcandy.data.roi.EpochSampler` does) and skipping the batches already consumed in that pass.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import Any

from torch.utils.data import DataLoader, Sampler

from mipcandy.data.roi import RandomROIDataset


class _From(Sampler[int]):
    """Indices ``start, start + 1, ...`` without end."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return count(self.start)


class BatchStream:
    """Batches from ``source`` (a ``RandomROIDataset`` or a ``DataLoader``) one after the other, forever.

    ``loader_options`` (``num_workers``, ``pin_memory``...) build the loader of a ``RandomROIDataset``.
    """

    def __init__(self, source: RandomROIDataset | DataLoader, **loader_options: Any) -> None:
        if not isinstance(source, RandomROIDataset | DataLoader):
            raise TypeError(f"training data must be a RandomROIDataset or a DataLoader, got {type(source).__name__}")
        self.source = source
        self.loader_options = loader_options
        self.position = 0
        self._iterator: Iterator[Any] | None = None
        self._peeked: Any = None

    @property
    def pass_length(self) -> int:
        """Batches in one pass over the source (its natural epoch)."""
        return len(self.source)

    def _open(self) -> Iterator[Any]:
        if isinstance(self.source, RandomROIDataset):
            return iter(DataLoader(self.source, batch_size=None, sampler=_From(self.position), **self.loader_options))
        loader = self.source
        passes, skip = divmod(self.position, len(loader))
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(passes)
        return self._cycle(loader, skip)

    @staticmethod
    def _cycle(loader: DataLoader, skip: int) -> Iterator[Any]:
        iterator = iter(loader)
        for _ in range(skip):
            next(iterator)
        while True:
            yield from iterator
            iterator = iter(loader)

    def peek(self) -> Any:
        """The next batch, without consuming it (the sanity check looks at it)."""
        if self._peeked is None:
            if self._iterator is None:
                self._iterator = self._open()
            self._peeked = next(self._iterator)
        return self._peeked

    def next(self) -> Any:
        """The next batch."""
        batch = self.peek()
        self._peeked = None
        self.position += 1
        return batch

    def seek(self, position: int) -> None:
        """Continue from batch ``position`` (0-based count of batches consumed so far)."""
        if position < 0:
            raise ValueError(f"stream position must be >= 0, got {position}")
        self.close()
        self.position = position

    def close(self) -> None:
        """Stop the workers of the current loader, if any."""
        self._iterator = None
        self._peeked = None
