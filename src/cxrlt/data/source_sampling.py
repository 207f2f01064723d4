"""Per-source sampling weights for merged datasets (seed 004).

With several sources in one label space (`data.sources`), `data.source_weights`
sets the share of training draws each source gets: draw t comes from source
s with probability w_s / sum(w), whatever the sources' sizes (a weight of 0
leaves a source out of training; its images still serve validation and
test). Within a source, images are drawn by the configured sampler
(`train.sampler`) run on that source's training rows alone, so e.g. `cycle`
balances classes inside each source.

The stream of an epoch is a function of (seed, epoch): the source of each
position comes from one uniform draw per position, and source s's positions
take, in order, the first n_s indices of its own sampler's stream. Both are
prefix-consistent, so the sampler keeps the DDP sharding and resume
guarantees of `cxrlt.data.samplers.IndexSampler`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cxrlt.data.samplers import IndexSampler
from cxrlt.seeds import child_seed, stream_rng
from cxrlt.errors import ConfigError


class SourceWeightedSampler(IndexSampler):
    """Draw sources with fixed probabilities, then images of the source with its own sampler.

    `sources` holds the position in `data.sources` of each image's source
    (`cxrlt.data.sources.source_positions` of the training rows);
    `build_sampler(labels=..., seed=...)` builds the within-source sampler
    (rank 0 of 1: sharding happens on the merged stream).
    """

    def __init__(self, labels: Any, sources: Sequence[int], weights: Sequence[float],
                 build_sampler: Callable[..., IndexSampler], num_samples: int | None = None, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, names: Sequence[str] | None = None):
        super().__init__(labels, num_samples, seed, rank, world_size)
        sources = np.asarray(sources, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        names = list(names) if names is not None else [f"data.sources.{s}" for s in range(len(weights))]
        if len(sources) != self.num_images:
            raise ValueError(f"{len(sources)} source indices for {self.num_images} images")
        if weights.ndim != 1 or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(f"data.source_weights must be numbers >= 0 with a positive sum, got {weights.tolist()}")
        counts = np.bincount(sources, minlength=len(weights))
        empty = [names[s] for s in range(len(weights)) if weights[s] > 0 and counts[s] == 0]
        if empty:
            raise ConfigError(
                f"data.source_weights gives a positive weight to {', '.join(empty)}, which has no training image; "
                "give it weight 0 or check its split"
            )
        self.active = np.flatnonzero(weights > 0)
        self.shares = weights[self.active] / weights[self.active].sum()
        self.rows = [np.flatnonzero(sources == s) for s in self.active]
        positive = self.positive.astype(np.float32)
        self.samplers = [
            build_sampler(labels=positive[rows], seed=child_seed(self.seed, s))
            for s, rows in zip(self.active, self.rows)
        ]

    def _draw(self, epoch: int, length: int) -> np.ndarray:
        uniforms = stream_rng(self.seed, epoch, 0).random(length)
        picks = np.minimum(np.searchsorted(np.cumsum(self.shares), uniforms, side="right"), len(self.shares) - 1)
        out = np.empty(length, dtype=np.int64)
        for k, (rows, sampler) in enumerate(zip(self.rows, self.samplers)):
            where = np.flatnonzero(picks == k)
            if len(where):
                out[where] = rows[sampler.global_indices(epoch, len(where))]
        return out

    def expected_frequency(self) -> np.ndarray:
        """Share-weighted mean of the within-source samplers' expected frequencies."""
        return sum(share * sampler.expected_frequency() for share, sampler in zip(self.shares, self.samplers))
