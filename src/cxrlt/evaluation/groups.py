"""Where the training positives that define head / medium / tail come from when scoring saved predictions.

The assignment itself is `cxrlt.data.stats.class_groups`, a label statistic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


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
