"""Pseudo-labels: a teacher's probabilities for the classes a source of a merged dataset does not annotate.

Merging NIH, CheXpert and CXR-LT data leaves each source's missing classes
without labels (masked, or zero with `data.unannotated: zero`). CheXFusion
(first in CXR-LT 2023) filled them with a teacher model's predictions
instead. `cxrlt pseudo-label TEACHER_RUN CONFIG --out TABLE` writes such a
table; `data.pseudo_labels: {table: TABLE}` reads it into training.

The table (CSV) has one row per image and the provenance columns
`image_id`, `source` (the image's position in `data.sources`, as
`load_table` records it), `source_name` (its reader) and `teacher` (the
teacher's saved-model folder), then one column per class of the run holding
the teacher's probability where that image's source does not annotate the
class, empty where it does. A class is unannotated by a source when none of
the source's rows has a label for it (every row NaN).

Filling (`apply_pseudo_labels`) touches only training rows (validation and
test keep the true labels, missing or not, so that scores never count a
teacher's guess as ground truth), only labels that are missing, and only the
sources and classes the config names (default: all). `mode: soft` uses the
probability as the target; `mode: hard` turns it into 1 at or above
`threshold`, else 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import canonical_key

if TYPE_CHECKING:
    from cxrlt.config import PseudoLabelConfig
    from cxrlt.data.table import LabelTable

PROVENANCE = ("image_id", "source", "source_name", "teacher")


def unannotated_classes(table: "LabelTable", positions: np.ndarray) -> dict[int, list[int]]:
    """For each source position (`positions`: one per row), the class indices no row of it labels."""
    found = {}
    for source in np.unique(positions):
        rows = table.labels[positions == source]
        found[int(source)] = np.flatnonzero(np.isnan(rows).all(axis=0)).tolist()
    return found


def pseudo_label_frame(table: "LabelTable", positions: np.ndarray, rows: np.ndarray, probabilities: np.ndarray,
                       teacher: str) -> pd.DataFrame:
    """The table of `rows` of `table` with the teacher's `probabilities` (rows x classes) where unannotated."""
    missing = unannotated_classes(table, positions)
    keep = np.zeros((len(rows), len(table.classes)), dtype=bool)
    for i, row in enumerate(rows):
        keep[i, missing[int(positions[row])]] = True
    values = np.where(keep, probabilities, np.nan)
    meta = table.meta.iloc[rows]
    frame = pd.DataFrame({
        "image_id": meta["image_id"].astype(str).to_numpy(),
        "source": positions[rows],
        "source_name": meta["source"].astype("string").fillna("").to_numpy(),
        "teacher": teacher,
    })
    return pd.concat([frame, pd.DataFrame(values, columns=list(table.classes))], axis=1)


def read_pseudo_labels(path: str | Path, classes: Sequence[str]) -> pd.DataFrame:
    """Read a pseudo-label table, its class columns renamed to `classes`' spelling; InputError names what is wrong."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"image_id": str})
    except FileNotFoundError:
        raise InputError("pseudo-label table not found (write it with `cxrlt pseudo-label`)", path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV table ({exc})", path) from None
    absent = [column for column in PROVENANCE if column not in frame.columns]
    if absent:
        raise InputError(f"missing column(s) {', '.join(absent)}; expected {', '.join(PROVENANCE)} and one column "
                         "per class (the table `cxrlt pseudo-label` writes)", path)
    known = {canonical_key(name): name for name in classes}
    columns = [column for column in frame.columns if column not in PROVENANCE]
    unknown = [column for column in columns if canonical_key(column) not in known]
    if unknown:
        raise InputError(f"class column(s) {', '.join(unknown)} are not classes of this run "
                         f"({', '.join(classes)})", path)
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = (values.isna() & frame[columns].notna()) | (values < 0) | (values > 1)
    if bad.to_numpy().any():
        row, column = np.argwhere(bad.to_numpy())[0]
        raise InputError(f"line {row + 2}, column {columns[column]!r}: {frame[columns].iat[row, column]!r} is not "
                         "a probability in [0, 1] (or empty)", path)
    if frame["image_id"].duplicated().any():
        repeated = frame.loc[frame["image_id"].duplicated(), "image_id"].iloc[0]
        raise InputError(f"image id {repeated!r} has more than one row", path)
    out = frame[list(PROVENANCE)].copy()
    for column in columns:
        out[known[canonical_key(column)]] = values[column].to_numpy(dtype=np.float64)
    return out


def apply_pseudo_labels(table: "LabelTable", positions: np.ndarray, config: "PseudoLabelConfig") -> "LabelTable":
    """`table` with the missing labels of its training rows filled from the configured pseudo-label table."""
    from cxrlt.data.table import LabelTable

    classes = list(table.classes)
    frame = read_pseudo_labels(config.table, classes).set_index("image_id")
    teacher = frame.reindex(table.meta["image_id"].astype(str))[classes].to_numpy(dtype=np.float64)
    chosen = np.ones(len(classes), dtype=bool)
    if config.classes is not None:
        chosen[:] = False
        chosen[[_class_index(name, classes) for name in config.classes]] = True
    rows = (table.meta["split"] == "train").to_numpy()
    if config.sources is not None:
        rows = rows & np.isin(positions, config.sources)
    unannotated = np.zeros_like(table.labels, dtype=bool)
    for source, columns in unannotated_classes(table, positions).items():
        unannotated[np.ix_(positions == source, columns)] = True
    fill = rows[:, None] & chosen[None, :] & unannotated & np.isnan(table.labels) & ~np.isnan(teacher)
    values = teacher if config.mode == "soft" else (teacher >= config.threshold).astype(np.float64)
    labels = np.where(fill, values, table.labels)
    return LabelTable(table.meta.copy(), labels, table.classes, table.image_root)


def _class_index(name: str, classes: list[str]) -> int:
    keys = [canonical_key(c) for c in classes]
    if canonical_key(name) not in keys:
        raise ConfigError(f"data.pseudo_labels.classes: {name!r} is not a class of this run ({', '.join(classes)})")
    return keys.index(canonical_key(name))
