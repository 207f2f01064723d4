"""What a prediction table is scored with besides its labels: training positives and tuned thresholds.

`cxrlt train` writes its model card (`cxrlt.models.card`) into the run
folder, beside its predictions: the model's `classes`, `train_positives`
(per class, on the training split: what head / medium / tail are made of)
and `thresholds` (per class, tuned on validation). `cxrlt evaluate` and `cxrlt compare` read
them here when they score prediction tables of such a run, or tune
thresholds on validation predictions given to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cxrlt.labels import canonical_key
from cxrlt.models.card import ModelCard, find_card


def saved_per_class(path: str | Path, field: str, classes: Sequence[str]) -> tuple[np.ndarray | None, Path | None]:
    """(`field` per class in the order of `classes`, the card it came from) for the model card at or beside `path`.

    (None, card path) when the card has no such values for these classes;
    (None, None) when there is no card.
    """
    card = find_card(path)
    if card is None:
        return None, None
    return ModelCard.read(card).per_class(field, classes), card


def saved_thresholds(predictions: str | Path, classes: Sequence[str]) -> np.ndarray | None:
    """The thresholds tuned on validation by the run the prediction table `predictions` lies in, or None."""
    return saved_per_class(predictions, "thresholds", classes)[0]


def tuned_thresholds(val_predictions: Path, val_labels: Path, classes: Sequence[str], id_column: str | None,
                     method: str = "max_f1", target_sensitivity: float = 0.9) -> np.ndarray:
    """Per-class thresholds, in the order of `classes`, tuned on a validation prediction table and its labels."""
    from cxrlt.evaluation.metrics import tune_thresholds
    from cxrlt.evaluation.predictions import align, read_label_csv, read_predictions

    # Only the compared classes are tuned: a validation label file may hold more.
    val = align(read_predictions(val_predictions, id_column),
                read_label_csv(val_labels, id_column, classes, allow_missing_classes=True))
    tuned = tune_thresholds(val.labels, val.probs, method, target_sensitivity, classes=list(val.classes))
    by_class = {canonical_key(name): value for name, value in zip(val.classes, tuned)}
    return np.array([by_class[canonical_key(name)] for name in classes])


def pair_thresholds(
    predictions: tuple[Path, Path],
    classes: Sequence[str],
    val_predictions: Sequence[Path] | None = None,
    val_labels: Path | None = None,
    id_column: str | None = None,
    method: str = "max_f1",
    target_sensitivity: float = 0.9,
) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """Each of two prediction tables' thresholds, and a note on where they come from.

    Tuned on `val_predictions` (one per table) against `val_labels` when
    given; else those the runs of both tables saved; else None.
    """
    if val_predictions is not None:
        first, second = (tuned_thresholds(path, val_labels, classes, id_column, method, target_sensitivity)
                         for path in val_predictions)
        names = " and ".join(map(str, val_predictions))
        return (first, second), f"F1 at thresholds tuned on {names} ({method})"
    first, second = (saved_thresholds(path, classes) for path in predictions)
    if first is not None and second is not None:
        return (first, second), "F1 at the thresholds each run tuned on its validation split (model.json)"
    return None, "no F1: no tuned thresholds (give --val-predictions VA.csv VB.csv --val-labels VL.csv)"
