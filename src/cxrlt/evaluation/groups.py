"""Head / medium / tail class groups from training positive counts, and where those counts come from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from cxrlt.labels import a_third, group_sizes

Group = Literal["head", "medium", "tail"]
GROUPS: tuple[Group, ...] = ("head", "medium", "tail")


def class_groups(
    positives: Sequence[float],
    method: Literal["rank", "count"] = "rank",
    head: int = 0,
    tail: int = 0,
    head_min: int = 1000,
    tail_max: int = 100,
    classes: Sequence[str] | None = None,
) -> list[Group]:
    """Assign each class to head, medium or tail by its training positives.

    `rank` puts the `head` most frequent classes in head and the `tail` least
    frequent in tail; 0 means the default of the label space of `classes`
    (`cxrlt.labels.group_sizes`: CXR-LT 2023 9 and 9 of 26, as seed 002),
    or a third of the classes when they are not given. Ties in count are
    broken by class order, so the result is deterministic.
    `count` uses thresholds: head when positives >= head_min, tail when
    positives < tail_max, medium otherwise.
    """
    counts = np.asarray(positives, dtype=float)
    n = len(counts)
    if method == "count":
        return ["head" if c >= head_min else "tail" if c < tail_max else "medium" for c in counts]
    if classes is not None and len(classes) != n:
        raise ValueError(f"{len(classes)} class names for {n} positive counts")
    default_head, default_tail = group_sizes(classes) if classes is not None else (a_third(n), a_third(n))
    n_head = head or default_head
    n_tail = tail or default_tail
    if n_head + n_tail > n:
        raise ValueError(f"{n_head} head + {n_tail} tail classes exceed the {n} classes")
    order = np.argsort(-counts, kind="stable")  # most frequent first
    groups: list[Group] = ["medium"] * n
    for i in order[:n_head]:
        groups[i] = "head"
    for i in order[n - n_tail:] if n_tail else []:
        groups[i] = "tail"
    return groups


def training_positives(
    classes: Sequence[str],
    groups_from: Path | None = None,
    predictions: Sequence[Path] = (),
    id_column: str | None = None,
) -> tuple[np.ndarray | None, str]:
    """Training positives per class for head / medium / tail, and a note saying where they came from.

    `groups_from` is a training label file (CSV: its 1s are counted) or a
    run folder / model folder / `model.json` (its saved `train_positives`).
    Without it, the counts saved with the run of the first of `predictions`
    that lies in a run folder are used. (None, note) when there are none:
    the caller falls back to the evaluated labels and says so.
    """
    from cxrlt.errors import InputError
    from cxrlt.evaluation.saved import saved_per_class

    if groups_from is not None:
        groups_from = Path(groups_from)
        if groups_from.is_dir() or groups_from.suffix == ".json":
            counts, card = saved_per_class(groups_from, "train_positives", classes)
            if card is None:
                raise InputError("no model card (model.json) here: a run folder, a model folder or its model.json "
                                 "was expected", groups_from)
            if counts is None:
                raise InputError(f"holds no training positives for the classes {', '.join(classes)}", card)
            return counts, f"groups from the training positives saved in {card}"
        from cxrlt.evaluation.predictions import read_label_csv

        train = read_label_csv(groups_from, id_column, classes, allow_missing_classes=True)
        return np.sum(train.values == 1, axis=0), f"groups from the training positives in {groups_from}"
    for path in predictions:
        counts, card = saved_per_class(path, "train_positives", classes)
        if counts is not None:
            return counts, f"groups from the training positives saved in {card}"
    return None, ("groups from the evaluated labels' positive counts (no saved training counts beside the "
                  "predictions: give --groups-from TRAIN.csv or a run folder)")
