"""What a prediction table is scored with besides its labels: training positives and tuned thresholds.

`cxrlt train` writes `model.json` into the run folder, beside its
`predictions.csv`: the model's `classes`, `train_positives` (per class, on
the training split: what head / medium / tail are made of) and `thresholds`
(per class, tuned on validation). `cxrlt evaluate` and `cxrlt compare` read
them here when they score prediction tables of such a run, or tune
thresholds on validation predictions given to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cxrlt.errors import InputError
from cxrlt.io import read_json
from cxrlt.labels import canonical_key

# The name `cxrlt.training.export` writes (not imported from there: that module loads torch).
MODEL_META = "model.json"


def find_model_meta(path: str | Path) -> Path | None:
    """The `model.json` that `path` is, that the folder `path` holds, or that lies beside the file `path`."""
    path = Path(path)
    for candidate in (path, path / MODEL_META, path.parent / MODEL_META):
        if candidate.name == MODEL_META and candidate.is_file():
            return candidate
    return None


def read_model_meta(path: Path) -> dict[str, Any]:
    """A `model.json` as a mapping (an InputError when it is not one)."""
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
        raise InputError("is not a cxrlt model description (no `classes` list)", path)
    return meta


def saved_per_class(meta: Mapping[str, Any], key: str, classes: Sequence[str]) -> np.ndarray | None:
    """`meta[key]` (one number per saved class) in the order of `classes`, matched by canonical name.

    None when the key is absent or the saved classes are not `classes`.
    """
    values, names = meta.get(key), meta.get("classes")
    if not isinstance(values, list) or not isinstance(names, list) or len(values) != len(names):
        return None
    position = {canonical_key(name): j for j, name in enumerate(names)}
    if len(names) != len(classes) or any(canonical_key(c) not in position for c in classes):
        return None
    return np.array([values[position[canonical_key(c)]] for c in classes], dtype=np.float64)  # None -> NaN


def saved_thresholds(predictions: str | Path, classes: Sequence[str]) -> np.ndarray | None:
    """The thresholds tuned on validation by the run the prediction table `predictions` lies in, or None."""
    meta_path = find_model_meta(predictions)
    return None if meta_path is None else saved_per_class(read_model_meta(meta_path), "thresholds", classes)


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
