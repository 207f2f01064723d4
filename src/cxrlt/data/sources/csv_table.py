"""Generic CSV: a path column plus one column per class (registered as "csv").

This is also the format `LabelTable.save_csv` writes, so a saved table
(merged sources, assigned splits) reads back unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlt.data.sources._reading import (
    SHOWN,
    CsvFile,
    check_images_folder,
    is_known_finding,
    label_values,
    normalise_sex,
    normalise_split,
    number,
    parse_categorical,
    quote,
)
from cxrlt.data.table import LabelTable
from cxrlt.errors import InputError
from cxrlt.labels import canonical_key
from cxrlt.registry import SOURCES

log = logging.getLogger(__name__)


@SOURCES.register("csv")
def csv_table(
    labels: Path,
    images: Path | None = None,
    path_column: str = "path",
    id_column: str | None = None,
    patient_column: str | None = None,
    study_column: str | None = None,
    view_column: str | None = None,
    split_column: str | None = None,
    classes: list[str] | None = None,
) -> LabelTable:
    """Read a generic label CSV: image path, optional metadata, one column per class.

    Metadata columns: `path_column` (required; relative to `images` or
    absolute), and the id, patient, study, view and split columns. Each of
    those left unset is taken from the column of the `LabelTable` name
    (image_id, patient_id, study_id, view, split) when the file has one;
    without an id column the path is the image id. Columns named sex, age
    and source are carried over too. Split values: train, val (validate,
    valid) or test.

    Classes: `classes` names the class columns (matched by name in any
    spelling; values must be numbers from 0 to 1, or blank = missing).
    Without it, a column is a class when it is not a metadata column and
    either (a) it has at least one value and every value is 0, 1 (any
    numeric spelling: 1, 1.0) or blank, or (b) it is entirely blank and
    its name is a known finding (so a saved table's all-missing class is
    kept). A column named like a known finding that holds anything else is
    an error (a broken label column is never dropped silently). Every other
    column is ignored. When an inferred class is not a finding's name (a
    0/1 metadata flag?), a warning lists the inferred classes for the user
    to confirm; declare `classes` when a 0/1 column is not a class.
    """
    file = CsvFile(labels, "label CSV")
    roles = {
        "path": path_column,
        "image_id": id_column,
        "patient_id": patient_column,
        "study_id": study_column,
        "view": view_column,
        "split": split_column,
    }
    explicit = {role: name for role, name in roles.items() if name is not None}
    col = file.require({role: (name,) for role, name in explicit.items()})
    for role in roles:
        if role not in col and (found := file.find(role)) is not None:
            col[role] = found
    for role in ("sex", "age", "source"):
        if (found := file.find(role)) is not None and found not in col.values():
            col[role] = found
    free = [c for c in file.header if c not in col.values()]
    class_columns = _declared_columns(file, classes, free) if classes is not None else free

    dtypes: dict[str, object] = {c: str for role, c in col.items() if role in ("path", "image_id", "patient_id", "study_id")}
    dtypes.update({c: "category" for role, c in col.items() if role in ("view", "split", "sex", "age", "source")})
    dtypes.update({c: "category" for c in class_columns})
    frame = file.read(dtypes)
    file.check_required_values(frame, [col["path"]])

    if classes is not None:
        label_matrix = _declared_labels(file, frame, class_columns)
        names = tuple(classes)
    else:
        label_matrix, class_columns = _inferred_labels(file, frame, class_columns)
        names = tuple(class_columns)

    paths = frame[col["path"]].str.strip()
    meta = pd.DataFrame({"path": paths})
    meta["image_id"] = frame[col["image_id"]].str.strip() if "image_id" in col else paths
    file.check_unique(meta["image_id"], "image id" if "image_id" in col else "image path")
    for role in ("patient_id", "study_id", "view", "source"):
        if role in col:
            meta[role] = frame[col[role]].astype("str").str.strip()
    if "sex" in col:
        meta["sex"] = normalise_sex(frame[col["sex"]])
    if "age" in col:
        meta["age"] = _numbers(file, frame, col["age"])
    if "split" in col:
        meta["split"] = normalise_split(file, frame[col["split"]], col["split"])
    if "source" not in col:
        meta["source"] = "csv"
    return LabelTable(meta, label_matrix, names, check_images_folder(images))


def _declared_columns(file: CsvFile, classes: list[str], free: list[str]) -> list[str]:
    """Header columns of the declared classes (exact name first, then any spelling)."""
    by_key = {canonical_key(c): c for c in reversed(free)}
    columns, missing = [], []
    for name in classes:
        column = name if name in free else by_key.get(canonical_key(name))
        if column is None:
            missing.append(name)
        columns.append(column)
    if missing:
        raise InputError(
            f"the header has no column for the class(es) {', '.join(map(repr, missing[:SHOWN]))}"
            f"{' and more' if len(missing) > SHOWN else ''}; the header has: {file.shown_header()}",
            file.path,
            1,
        )
    return columns


def _declared_labels(file: CsvFile, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Label matrix of declared class columns: numbers in [0, 1] or blank."""

    def convert(text: str) -> float | None:
        value = number(text)
        return value if value is not None and 0.0 <= value <= 1.0 else None

    matrix = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        values, invalid = parse_categorical(frame[column], convert)
        if invalid.any():
            rows = np.flatnonzero(invalid)
            raise file.row_error(
                f"class column {column!r} must hold numbers from 0 to 1 (1 positive, 0 negative) or blank (missing)",
                rows,
                [quote(frame[column].iloc[r]) for r in rows[:SHOWN]],
            )
        matrix[:, j] = values
    return matrix


def _inferred_labels(file: CsvFile, frame: pd.DataFrame, candidates: list[str]) -> tuple[np.ndarray, list[str]]:
    """Keep the candidate columns that look like classes (see `csv_table`)."""
    binary = label_values((0.0, 1.0))
    kept, columns = [], []
    for column in candidates:
        values, invalid = parse_categorical(frame[column], binary)
        if invalid.any():
            if is_known_finding(column):
                # A finding's column with a stray value is a broken label, not metadata to drop silently.
                rows = np.flatnonzero(invalid)
                raise file.row_error(
                    f"column {column!r} names a finding but holds values other than 0, 1 or blank (missing)"
                    + (" (-1 marks an uncertain label: map it first, or read the file with the chexpert or "
                       "mimic source)" if (frame[column].astype("str").str.strip() == "-1").any() else "")
                    + "; fix the values or declare the class columns with `classes`",
                    rows,
                    [quote(frame[column].iloc[r]) for r in rows[:SHOWN]],
                )
            continue
        if np.isnan(values).all() and not is_known_finding(column):
            continue
        kept.append(values)
        columns.append(column)
    if not columns:
        raise InputError(
            "no class columns found: expected columns holding only 0, 1 or blank besides the metadata "
            f"columns; the header has: {file.shown_header()} (declare them with `classes`)",
            file.path,
            1,
        )
    _report_inferred(file, columns, [c for c in candidates if c not in columns])
    return np.stack(kept, axis=1), columns


def _report_inferred(file: CsvFile, classes: list[str], ignored: list[str]) -> None:
    """Warn, listing every inferred class for the user to confirm, when one is not a finding's name.

    A 0 / 1 column named like no finding is as likely a metadata flag
    (portable, follow-up) as a class; a finding's column is a class.
    """
    unknown = [c for c in classes if not is_known_finding(c)]
    if unknown:
        log.warning(
            "%s: no `classes` declared, so %d column(s) were taken as classes from their 0 / 1 / blank values: %s%s. "
            "%s %s not a finding name: if metadata, declare the class columns (`classes: [...]` in the source, "
            "--classes for `cxrlt stats`) to leave it out", file.path, len(classes), ", ".join(classes),
            f" (not classes: {', '.join(ignored)})" if ignored else "", ", ".join(map(repr, unknown)),
            "is" if len(unknown) == 1 else "are")


def _numbers(file: CsvFile, frame: pd.DataFrame, column: str) -> np.ndarray:
    values, invalid = parse_categorical(frame[column], number)
    if invalid.any():
        rows = np.flatnonzero(invalid)
        raise file.row_error(
            f"column {column!r} must be a number or blank", rows, [quote(frame[column].iloc[r]) for r in rows[:SHOWN]]
        )
    return values.astype(np.float64)
