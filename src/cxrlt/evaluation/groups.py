"""Head / medium / tail class groups from training positive counts."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

Group = Literal["head", "medium", "tail"]
GROUPS: tuple[Group, ...] = ("head", "medium", "tail")


def class_groups(
    positives: Sequence[float],
    method: Literal["rank", "count"] = "rank",
    head: int = 0,
    tail: int = 0,
    head_min: int = 1000,
    tail_max: int = 100,
) -> list[Group]:
    """Assign each class to head, medium or tail by its training positives.

    `rank` puts the `head` most frequent classes in head and the `tail` least
    frequent in tail (seed 002: 9 and 9 of 26); 0 means a third of the classes
    (rounded down, at least one when there are three or more classes). Ties
    in count are broken by class order, so the result is deterministic.
    `count` uses thresholds: head when positives >= head_min, tail when
    positives < tail_max, medium otherwise.
    """
    counts = np.asarray(positives, dtype=float)
    n = len(counts)
    if method == "count":
        return ["head" if c >= head_min else "tail" if c < tail_max else "medium" for c in counts]
    third = max(1, n // 3) if n >= 3 else 0
    n_head = head or third
    n_tail = tail or third
    if n_head + n_tail > n:
        raise ValueError(f"{n_head} head + {n_tail} tail classes exceed the {n} classes")
    order = np.argsort(-counts, kind="stable")  # most frequent first
    groups: list[Group] = ["medium"] * n
    for i in order[:n_head]:
        groups[i] = "head"
    for i in order[n - n_tail:] if n_tail else []:
        groups[i] = "tail"
    return groups
