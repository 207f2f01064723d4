"""The torch Dataset over an image store and a label matrix.

Items are looked up by a key `(row, epoch, position)` produced by
`KeyedSampler`, so the random augmentation of each draw is a pure function of
(seed, epoch, position): identical in any worker process, under DDP and after
resuming. Images leave the loader as uint8 (1, S, S) tensors; conversion to
float and normalisation happen on the accelerator inside the model.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cxrlt.data.transforms import Pipeline
from cxrlt.seeds import item_rng


class ImageDataset(Dataset):
    """Rows of a store with their labels, transformed per draw."""

    def __init__(self, store: Sequence[np.ndarray], labels: np.ndarray, pipeline: Pipeline, seed: int = 0):
        if len(store) != len(labels):
            raise ValueError(f"store has {len(store)} images but there are {len(labels)} label rows")
        self.store = store
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
        self.pipeline = pipeline
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        row, epoch, position = key if isinstance(key, tuple) else (key, 0, key)
        rng = item_rng(self.seed, epoch, position)
        image = self.pipeline(self.store[row], rng)
        return torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0), self.labels[row], row


class KeyedSampler(Sampler):
    """Wraps an index sampler so each draw carries (row, epoch, position)."""

    def __init__(self, base: Sampler, rank: int = 0):
        self.base = base
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Advance the epoch of this sampler and of the wrapped one."""
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        offset = self.rank * len(self.base)
        for position, row in enumerate(self.base):
            yield int(row), self.epoch, offset + position


class ShardSampler(Sampler):
    """Evaluation order: rank r of w takes rows r, r+w, ... (no padding, no repeats)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.rows = range(rank, n, world_size)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows)
