"""Every seed derivation of the toolkit, in one place.

Randomness is a pure function of the run seed and of where it is used
(stage, epoch, rank, batch, sampler stream, image position), so a run
resumed from an end-of-epoch checkpoint, or split over several processes,
draws exactly what an uninterrupted single-process run draws.
"""

from __future__ import annotations

import numpy as np


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (stable across runs and processes): torch generators, stages, batches."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def stream_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """Independent numpy generator number `stream` of (seed, epoch): the samplers' random streams."""
    return np.random.default_rng(np.random.SeedSequence(seed % 2**64, spawn_key=(epoch, stream)))


def item_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of one draw of an epoch: its per-image augmentation."""
    return np.random.default_rng((seed, epoch, position))


def child_seed(seed: int, key: int) -> int:
    """A 32-bit seed of sub-sampler `key` (e.g. one data source) derived from `seed`."""
    return int(np.random.SeedSequence((seed, int(key))).generate_state(1)[0])
