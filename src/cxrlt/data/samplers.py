"""Training samplers: which image indices an epoch visits, and how often.

Five samplers, chosen by name from `SAMPLERS` (YAML `train.sampler: {name:
cycle}`), all built from the training label matrix `labels` (images x
classes; a label is *positive* as `cxrlt.data.stats.positive_matrix` says:
>= 0.5, so NaN = missing counts as not positive):

`instance`
    Plain shuffling: the stream is a fresh random permutation of all images,
    then another, ... cut at `num_samples`. With `num_samples = N` every image
    is visited exactly once per epoch.
`cycle`
    Class-balanced sampling (seed 002, sec. 3.2, "cycle"). Draws come in
    rounds; each round visits every sampling class once, in a freshly
    shuffled order, and for each class takes the next image of that class's
    own image cycle (a random permutation of its positive images, reshuffled
    each time it is used up). Every draw therefore picks its class with
    p(j) = 1/G (G sampling classes) and, given the class, an image of that
    class uniformly; the cycling only lowers the variance (all positives of
    a class are shown before any repeats). The expected frequency of label
    i among drawn images is the paper's eq. (1),
    p_i = sum_j p(j) n_ij / n_j (`cxrlt.data.stats.expected_label_frequency`).
`least_sampled`
    Seed 002's "least-sampled": keep, per sampling class, the number of
    labels drawn so far (every positive label of every drawn image counts);
    each draw picks the class with the smallest count (ties broken uniformly
    by the seeded generator, so the first draw picks a random class), then
    the next image of that class's image cycle (as in `cycle`). Counts start
    at zero every epoch. It is sequential by nature (a pure-Python inner
    loop, about 3 microseconds a draw). Its label frequencies converge to
    eq. (1) with the class-pick rates pi that keep the least-drawn classes
    level: the classes it keeps picking (support S) all have the same,
    minimal, label rate m, and every other class a rate >= m because
    co-occurrence alone draws it that often. On NIH-14 that levels 11 of
    the 14 diseases and "no finding" at 0.112 while Atelectasis, Effusion
    and Infiltration stay above. `expected_frequency` computes this limit
    (see `least_sampled_limit`).
`sqrt`
    Square-root sampling (Mahajan et al. 2018; Kang et al. 2020): images are
    drawn independently, with replacement, from the two-stage rule "pick a
    sampling class with p(j) proportional to sqrt(n_j), then an image of that
    class uniformly". The resulting image weight is
    w_x proportional to sum_{j positive in x} sqrt(n_j) / n_j = sum_j n_j^(-1/2),
    and eq. (1) with this p(j) gives the expected label frequencies. With
    single-label data a class is drawn with probability proportional to the
    square root of its natural frequency.
`repeat_factor`
    Repeat-factor sampling (Gupta et al., LVIS, 2019): class frequency
    f_c = n_c / N, class factor r_c = max(1, sqrt(threshold / f_c)), image
    factor r_x = max of r_c over the image's sampling classes (1 for an image
    with none). Each round repeats image x floor(r_x) times plus once more
    with probability frac(r_x) (fresh stochastic rounding every round), in a
    shuffled order; the stream is rounds one after another, cut at
    `num_samples` (default: round(sum r_x), the expected round length).
    `threshold` has no default: LVIS's 0.001 was tuned for 1,200 classes
    and changes nothing on NIH-14 (rarest class, Hernia, is 0.16%).

Images with no positive label (NIH "No Finding", 58% of its training set):
with `no_finding: class` (the default) they form one extra, implicit
sampling class, so class-balanced samplers show them as often as any disease
(p = 1/15 on NIH under `cycle`). With `no_finding: ignore` they belong to no
class: `cycle`, `least_sampled` and `sqrt` never draw them (eq. (1) over the
listed classes verbatim) and `repeat_factor` gives them the factor 1. A class
with no positive image cannot be sampled and is left out of the sampling
classes (with a logged warning). With a dataset that lists "No Finding" as a
class (CheXpert, CXR-LT) the rare rows with no positive at all would form a
tiny implicit class drawn 1/G of the time: use `no_finding: ignore` there.

Determinism and distributed training: an epoch's *global* stream is a
function of (seed, epoch) alone (`set_epoch`), and a longer stream extends a
shorter one (each random quantity comes from its own generator, consumed in
order). Under DDP every rank computes the same global stream of
`total_size = ceil(num_samples / world_size) * world_size` indices and keeps
positions rank, rank + world_size, ...: shares are disjoint by position,
equally long, and together are exactly the single-process stream of
`total_size` draws. Rank and world size come from `torch.distributed` when
it is initialised, unless passed explicitly. (With Lightning, build the
Trainer with `use_distributed_sampler=False` so it does not wrap these
samplers in a second distributed sampler.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, Iterator, Sequence

import numpy as np
import pandas as pd
from pydantic import Field
from torch.utils.data import Sampler

from cxrlt.data.stats import NoFinding, label_indicators, label_rates, positive_matrix, sampling_classes
from cxrlt.errors import ConfigError, InputError
from cxrlt.registry import SAMPLERS
from cxrlt.seeds import stream_rng

__all__ = [
    "IndexSampler",
    "build",
    "least_sampled_limit",
    "sampler_frequency_table",
    "NO_POSITIVE",
]

# `rank` and `world_size` are context too: they come from the run, not from YAML.
CONTEXT = ("labels", "num_samples", "seed", "rank", "world_size")
# Row name of the "image has no positive label" indicator in frequency tables.
NO_POSITIVE = "(no positive label)"


# ----------------------------------------------------------------- helpers


def _cycled(members: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """The first `count` items of: a random permutation of `members`, then another, ..."""
    rounds = -(-count // len(members))
    # One row of uniforms per permutation, drawn in order: prefix-consistent in `count`.
    order = np.argsort(rng.random((rounds, len(members))), axis=1)
    return members[order.ravel()[:count]]


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        import torch.distributed as dist

        live = dist.is_available() and dist.is_initialized()
        if rank is None:
            rank = dist.get_rank() if live else 0
        if world_size is None:
            world_size = dist.get_world_size() if live else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
    return int(rank), int(world_size)


# ------------------------------------------------------------- the samplers
class IndexSampler(Sampler[int], ABC):
    """Base of the registered samplers: DDP sharding, epochs, expected frequencies.

    Subclasses implement `_draw(epoch, length)` (the global stream, which must
    extend consistently with `length`) and `expected_frequency()`.
    """

    def __init__(
        self,
        labels: Any,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.positive = positive_matrix(labels)
        if self.positive.shape[0] == 0:
            raise InputError("a sampler needs a label matrix with at least one image; got none")
        self.indicators = label_indicators(self.positive)
        self.num_images = self.positive.shape[0]
        self.seed = int(seed)
        self.epoch = 0
        self.rank, self.world_size = _distributed(rank, world_size)
        if num_samples is not None and num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
        self._num_samples = num_samples

    @property
    def num_samples(self) -> int:
        """Draws per epoch over all ranks (before rounding up to a multiple of world_size)."""
        return self.natural_length() if self._num_samples is None else int(self._num_samples)

    def natural_length(self) -> int:
        """Epoch length used when `num_samples` is None: the number of images."""
        return self.num_images

    @property
    def total_size(self) -> int:
        """Length of the global stream: num_samples rounded up to a multiple of world_size."""
        return -(-self.num_samples // self.world_size) * self.world_size

    def __len__(self) -> int:
        return self.total_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose stream `__iter__` yields (call before each epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def global_indices(self, epoch: int | None = None, length: int | None = None) -> np.ndarray:
        """The global stream of `epoch` (default: the current one), all ranks together."""
        epoch = self.epoch if epoch is None else int(epoch)
        return self._draw(epoch, self.total_size if length is None else int(length))

    def __iter__(self) -> Iterator[int]:
        share = self.global_indices()[self.rank::self.world_size]
        return iter(share.tolist())

    @abstractmethod
    def _draw(self, epoch: int, length: int) -> np.ndarray:
        """The first `length` indices of the global stream of `epoch`."""

    @abstractmethod
    def expected_frequency(self) -> np.ndarray:
        """Expected fraction of drawn images positive for each class, then for "no positive label"."""


@SAMPLERS.register("instance", context=CONTEXT)
class InstanceSampler(IndexSampler):
    """Plain shuffling: consecutive random permutations of all images."""

    def _draw(self, epoch: int, length: int) -> np.ndarray:
        return _cycled(np.arange(self.num_images), length, stream_rng(self.seed, epoch, 0))

    def expected_frequency(self) -> np.ndarray:
        """The natural frequencies (exact per epoch when num_samples is a multiple of N)."""
        return self.indicators.mean(axis=0)


class _ClassSampler(IndexSampler):
    """Shared set-up of the samplers that reason in sampling classes."""

    def __init__(self, labels: Any, num_samples: int | None, seed: int, rank: int | None,
                 world_size: int | None, no_finding: str):
        super().__init__(labels, num_samples, seed, rank, world_size)
        self.no_finding = no_finding
        self.groups = sampling_classes(self.indicators, no_finding)
        membership = self.indicators[:, self.groups]
        self.members = [np.flatnonzero(column) for column in membership.T]
        self.class_counts = membership.sum(axis=0)


@SAMPLERS.register("cycle", context=CONTEXT)
class CycleSampler(_ClassSampler):
    """Class-balanced "cycle" sampling: shuffled rounds over classes, an image cycle per class."""

    def __init__(self, labels: Any, num_samples: int | None = None, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, no_finding: NoFinding = "class"):
        super().__init__(labels, num_samples, seed, rank, world_size, no_finding)

    def _draw(self, epoch: int, length: int) -> np.ndarray:
        n_groups = len(self.groups)
        rounds = -(-length // n_groups)
        order = np.argsort(stream_rng(self.seed, epoch, 0).random((rounds, n_groups)), axis=1)
        picks = order.ravel()[:length]
        positions = np.argsort(picks, kind="stable")
        bounds = np.cumsum(np.bincount(picks, minlength=n_groups))[:-1]
        out = np.empty(length, dtype=np.int64)
        for g, where in enumerate(np.split(positions, bounds)):
            out[where] = _cycled(self.members[g], len(where), stream_rng(self.seed, epoch, 1 + g))
        return out

    def expected_frequency(self) -> np.ndarray:
        """Eq. (1) with p(j) = 1/G over the sampling classes."""
        return label_rates(self.indicators, self.groups, np.full(len(self.groups), 1 / len(self.groups)))


@SAMPLERS.register("least_sampled", context=CONTEXT)
class LeastSampledSampler(_ClassSampler):
    """Seed 002 "least-sampled": always pick the class with the fewest labels drawn so far."""

    def __init__(self, labels: Any, num_samples: int | None = None, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, no_finding: NoFinding = "class"):
        super().__init__(labels, num_samples, seed, rank, world_size, no_finding)
        membership = self.indicators[:, self.groups]
        rows, cols = np.nonzero(membership)
        starts = np.searchsorted(rows, np.arange(self.num_images + 1))
        cols = cols.tolist()
        # Sampling classes of each image, as tuples: the inner loop is pure Python.
        self._classes_of = [tuple(cols[a:b]) for a, b in zip(starts[:-1], starts[1:])]

    def _draw(self, epoch: int, length: int) -> np.ndarray:
        n_groups = len(self.groups)
        ties = stream_rng(self.seed, epoch, 0).random(length).tolist()
        rngs = [stream_rng(self.seed, epoch, 1 + g) for g in range(n_groups)]
        members = self.members
        classes_of = self._classes_of
        counts = [0] * n_groups
        cycles: list[list[int]] = [[] for _ in range(n_groups)]
        cursor = [0] * n_groups
        out = [0] * length
        for t in range(length):
            low = min(counts)
            tied = counts.count(low)
            if tied == 1:
                g = counts.index(low)
            else:
                g = [k for k, c in enumerate(counts) if c == low][int(ties[t] * tied)]
            position = cursor[g]
            if position == len(cycles[g]):
                # Same image cycle as `cycle` uses: one uniform row per permutation.
                cycles[g] = members[g][np.argsort(rngs[g].random(len(members[g])))].tolist()
                position = 0
            image = cycles[g][position]
            cursor[g] = position + 1
            out[t] = image
            for k in classes_of[image]:
                counts[k] += 1
        return np.asarray(out, dtype=np.int64)

    def expected_frequency(self) -> np.ndarray:
        """The long-run label frequencies (`least_sampled_limit`)."""
        return least_sampled_limit(self.indicators, self.groups)


@SAMPLERS.register("sqrt", context=CONTEXT)
class SqrtSampler(_ClassSampler):
    """Square-root sampling: i.i.d. draws, class picked with p(j) proportional to sqrt(n_j)."""

    def __init__(self, labels: Any, num_samples: int | None = None, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, no_finding: NoFinding = "class"):
        super().__init__(labels, num_samples, seed, rank, world_size, no_finding)
        self.class_probs = np.sqrt(self.class_counts) / np.sqrt(self.class_counts).sum()
        per_image = self.indicators[:, self.groups] @ (self.class_probs / self.class_counts)
        self.image_weights = per_image / per_image.sum()
        self._cdf = np.cumsum(self.image_weights)

    def _draw(self, epoch: int, length: int) -> np.ndarray:
        u = stream_rng(self.seed, epoch, 0).random(length) * self._cdf[-1]
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), self.num_images - 1).astype(np.int64)

    def expected_frequency(self) -> np.ndarray:
        """Eq. (1) with p(j) proportional to sqrt(n_j)."""
        return label_rates(self.indicators, self.groups, self.class_probs)


@SAMPLERS.register("repeat_factor", context=CONTEXT)
class RepeatFactorSampler(_ClassSampler):
    """LVIS repeat-factor sampling with per-round stochastic rounding."""

    def __init__(self, labels: Any, num_samples: int | None = None, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, *,
                 threshold: Annotated[float, Field(gt=0.0, le=1.0)], no_finding: NoFinding = "class"):
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"repeat_factor threshold must be in (0, 1], got {threshold!r}")
        super().__init__(labels, num_samples, seed, rank, world_size, no_finding)
        self.threshold = float(threshold)
        frequency = self.class_counts / self.num_images
        self.class_factors = np.maximum(1.0, np.sqrt(self.threshold / frequency))
        membership = self.indicators[:, self.groups]
        self.repeat_factors = np.max(np.where(membership, self.class_factors, 1.0), axis=1)

    def natural_length(self) -> int:
        """round(sum of repeat factors): the expected length of one round."""
        return max(1, int(round(self.repeat_factors.sum())))

    def _draw(self, epoch: int, length: int) -> np.ndarray:
        rng = stream_rng(self.seed, epoch, 0)
        whole = np.floor(self.repeat_factors)
        fraction = self.repeat_factors - whole
        parts, drawn = [], 0
        while drawn < length:
            repeats = (whole + (rng.random(self.num_images) < fraction)).astype(np.int64)
            part = rng.permutation(np.repeat(np.arange(self.num_images), repeats))
            parts.append(part)
            drawn += len(part)
        return np.concatenate(parts)[:length]

    def expected_frequency(self) -> np.ndarray:
        """sum_x r_x y_x / sum_x r_x: each image appears in proportion to its factor."""
        return self.repeat_factors @ self.indicators / self.repeat_factors.sum()


# --------------------------------------------------------------- analytics
def least_sampled_limit(indicators: np.ndarray, groups: np.ndarray, steps_per_class: int = 2000) -> np.ndarray:
    """Long-run label frequencies of `least_sampled` (every indicator column).

    With A[i, j] = n_ij / n_j (expected labels i per image of class j), a
    pick-rate vector pi gives label rates A pi (eq. (1)). least_sampled keeps
    the counts of the classes it picks level with the minimum, so in the long
    run the picked classes S satisfy (A pi)_j = m for j in S and
    (A pi)_i >= m for every other sampling class, pi_j = 0 outside S. S is
    found by running the rule on expected counts (the mean-field version:
    add A[:, j] for the least-counted class j), then pi is solved exactly
    from A_SS pi_S = m 1, sum pi = 1. Should that exact solution fail its
    checks (a class at the border of S), the mean-field pick rates of the
    second half of the run are used instead (error O(1 / steps)).
    """
    n_groups = len(groups)
    increments = indicators.T.astype(np.float64) @ indicators[:, groups].astype(np.float64)
    increments /= increments[groups, np.arange(n_groups)]
    square = increments[groups]  # rows of the sampling classes only: what the rule compares
    counts = np.zeros(n_groups)
    steps = steps_per_class * n_groups
    picks = np.zeros(n_groups)
    for t in range(steps):
        j = int(np.argmin(counts))
        counts += square[:, j]
        if t >= steps // 2:
            picks[j] += 1
    support = np.flatnonzero(picks)
    solution = np.linalg.lstsq(square[np.ix_(support, support)], np.ones(len(support)), rcond=None)[0]
    pi = np.zeros(n_groups)
    pi[support] = solution / solution.sum()
    rates = square @ pi
    level = rates[support].mean()
    exact = (np.all(solution > 0) and np.allclose(rates[support], level, rtol=1e-9, atol=0)
             and np.all(rates >= level * (1 - 1e-9)))
    if not exact:
        pi = picks / picks.sum()
    return increments @ pi


def build(name: str, *, labels: Any, num_samples: int | None = None, seed: int = 0,
          rank: int | None = None, world_size: int | None = None, **params: Any) -> IndexSampler:
    """Build sampler `name` for a training label matrix (see the module docstring)."""
    context = {"labels": labels, "num_samples": num_samples, "seed": seed, "rank": rank, "world_size": world_size}
    return SAMPLERS.build(name, context=context, **params)


def sampler_frequency_table(labels: Any, classes: Sequence[str], name: str, draws: int | None = None,
                            seed: int = 0, **params: Any) -> pd.DataFrame:
    """Per class: natural, expected and drawn label frequency under sampler `name`.

    Columns: `class`, `positives` (n_c), `natural` (fraction of images
    positive), `expected` (the sampler's analytic frequency: natural for
    instance, eq. (1) for cycle and sqrt, the long-run limit for
    least_sampled, sum r_x y_x / sum r_x for repeat_factor) and `empirical`
    (fraction of `draws` drawn images positive; default one epoch, single
    process, epoch 0). A last row `NO_POSITIVE` describes images without any
    positive label when there are some. Frequencies are fractions of drawn
    images, so under multi-label sampling they sum to more than one.
    """
    sampler = build(name, labels=labels, num_samples=draws, seed=seed, rank=0, world_size=1, **params)
    indicators = sampler.indicators
    if len(classes) != indicators.shape[1] - 1:
        raise InputError(f"{len(classes)} class names for a label matrix with {indicators.shape[1] - 1} columns")
    drawn = np.bincount(sampler.global_indices(0), minlength=sampler.num_images)
    table = pd.DataFrame({
        "class": [*map(str, classes), NO_POSITIVE],
        "positives": indicators.sum(axis=0),
        "natural": indicators.mean(axis=0),
        "expected": sampler.expected_frequency(),
        "empirical": drawn @ indicators / drawn.sum(),
    })
    if not indicators[:, -1].any():
        table = table.iloc[:-1]
    return table
