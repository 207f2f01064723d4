"""Prediction tables and label files: the contract between training, ensembling and evaluation.

A prediction table is a CSV with one id column (`image_id` by default) and
one column per class holding a probability in [0, 1]:

    image_id,Atelectasis,Cardiomegaly,...
    00000003_000.png,0.0123,0.4501,...

A label file for scoring has an id column and one column per class holding
1 (positive), 0 (negative) or a blank (missing; also NA / nan). When the
classes to score are given, other columns (metadata) are ignored; otherwise
every column except the id column and the `LabelTable` metadata columns
(path, patient_id, study_id, view, sex, age, split, source) is a class.

The id column, when not named, is the first of these present in the header
(case-insensitively, in this order): `image_id`, `dicom_id`, `Image Index`,
`path`, `id`. Ids are compared as text, exactly.

Class names are matched as `cxrlt.labels.canonical_key` does, so two
spellings of one finding ("Effusion" / "Pleural Effusion",
"Pleural_Thickening" / "Pleural Thickening") refer to the same column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd

from cxrlt.data.table import META_COLUMNS
from cxrlt.errors import InputError
from cxrlt.io import atomic_path, write_dataframe_csv
from cxrlt.labels import canonical_key

ID_COLUMNS = ("image_id", "dicom_id", "Image Index", "path", "id")
_EXAMPLES = 3  # ids quoted in a mismatch message


@dataclass(frozen=True)
class ClassTable:
    """An id column and a (rows x classes) float matrix read from one file.

    `values` are probabilities for a prediction table, and 1 / 0 / NaN
    (missing) for a label file. Unpacks as `ids, classes, values`.
    """

    ids: np.ndarray
    classes: tuple[str, ...]
    values: np.ndarray
    path: Path | None = None
    id_column: str = "image_id"

    def __iter__(self) -> Iterator:
        return iter((self.ids, self.classes, self.values))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def name(self) -> str:
        """How messages refer to this table."""
        return str(self.path) if self.path is not None else "<in memory>"


class Aligned(NamedTuple):
    """Predictions and labels over the same images and classes, row for row."""

    ids: np.ndarray
    classes: tuple[str, ...]
    probs: np.ndarray
    labels: np.ndarray


# --------------------------------------------------------------------------- writing
def write_predictions(
    path: str | Path,
    image_ids: Sequence[str],
    classes: Sequence[str],
    probs: np.ndarray,
    id_column: str = "image_id",
) -> Path:
    """Write a prediction table atomically; `probs` is (images x classes) in [0, 1].

    Each probability is written in the shortest form that reads back to the
    same float32 (for float32 input) or float64 value, so reading the file
    back gives the same values and the same ranking, ties included.
    """
    probs = np.asarray(probs)
    ids = [str(i) for i in image_ids]
    classes = [str(c) for c in classes]
    if probs.ndim != 2 or probs.shape != (len(ids), len(classes)):
        raise ValueError(f"probabilities {probs.shape} do not match {len(ids)} ids x {len(classes)} classes")
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    if id_column in classes or len({canonical_key(c) for c in classes}) != len(classes):
        raise ValueError(f"class names must be unique and differ from the id column {id_column!r}")
    bad = ~(np.isfinite(probs) & (probs >= 0) & (probs <= 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"probabilities must be finite and in [0, 1]; {int(bad.sum())} are not, "
            f"first {probs[row, col]} for image {ids[row]!r}, class {classes[col]!r}"
        )
    if probs.dtype not in (np.float32, np.float64):
        probs = probs.astype(np.float64)
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    columns = {id_column: pa.array(ids, type=pa.string())}
    columns.update({name: pa.array(probs[:, j]) for j, name in enumerate(classes)})
    # Arrow writes each float in its shortest exact form (float32 as float32)
    # and is ~10x faster than pandas. It quotes every header name and text
    # value, so the header comes from the csv module (quotes only where
    # needed) and ids are quoted only when one of them needs it.
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([id_column, *classes])
    needs_quotes = any(ch in text for text in ids for ch in ',"\r\n')
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed" if needs_quotes else "none")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(header.getvalue().encode("utf-8"))
        pa_csv.write_csv(pa.table(columns), handle, options)
    return Path(path)


# --------------------------------------------------------------------------- reading
def read_id_table(path: str | Path, id_column: str | None, what: str) -> tuple[pd.DataFrame, str]:
    """Any CSV keyed by image id (e.g. a metadata table) as a frame, and its id column's name.

    The id column is found as for prediction and label files; blank or
    repeated ids are refused, naming the line.
    """
    return _read_frame(Path(path), id_column, what)


def _read_frame(path: Path, id_column: str | None, what: str) -> tuple[pd.DataFrame, str]:
    """The CSV as a frame with the id column as text; checks header and ids."""
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    except FileNotFoundError:
        raise InputError(f"{what} file not found", path) from None
    except (pd.errors.EmptyDataError, IndexError):
        raise InputError(f"the {what} file is empty; expected a header line and one row per image", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read as a CSV {what} file ({exc})", path) from None
    header = [str(h) for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputError(f"the header repeats the column(s) {', '.join(map(repr, repeated))}; names must be unique", path, 1)
    column = _id_column(header, id_column, path, what)
    try:
        frame = pd.read_csv(path, dtype={column: str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read as a CSV {what} file ({exc})", path) from None
    if frame.empty:
        raise InputError(f"the {what} file has a header but no rows", path)
    ids = frame[column]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise InputError(f"the id column {column!r} is blank on {int(ids.isna().sum())} row(s), first here", path, row + 2)
    frame[column] = ids.str.strip()
    duplicated = frame[column].duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = frame[column].to_numpy()[duplicated][0]
        lines = [int(i) + 2 for i in np.flatnonzero(frame[column].to_numpy() == first)]
        raise InputError(
            f"image ids must be unique, but {int(frame[column].duplicated().sum())} repeat in column {column!r}; "
            f"first {first!r} on lines {', '.join(map(str, lines))}",
            path,
        )
    return frame, column


def _id_column(header: list[str], requested: str | None, path: Path, what: str) -> str:
    if requested is not None:
        if requested not in header:
            raise InputError(
                f"the id column {requested!r} is not in the {what} file; its columns are {_list(header)}", path, 1
            )
        return requested
    folded = {h.strip().lower(): h for h in reversed(header)}
    for candidate in ID_COLUMNS:
        if candidate.lower() in folded:
            return folded[candidate.lower()]
    raise InputError(
        f"no id column found in the {what} file (looked for {', '.join(ID_COLUMNS)}); its columns are "
        f"{_list(header)}; name the id column with --id-column",
        path,
        1,
    )


def _numeric_column(frame: pd.DataFrame, name: str, column: str, path: Path, what: str) -> np.ndarray:
    """One column as float64; a non-numeric cell is reported with its line."""
    series = frame[name]
    if series.dtype.kind in "biuf":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(series, errors="coerce")
    bad = (numbers.isna() & series.notna()).to_numpy()
    if not bad.any():
        return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    row = int(np.flatnonzero(bad)[0])
    raise InputError(
        f"column {name!r} holds {series.iloc[row]!r} for image {frame[column].iloc[row]!r}; "
        f"expected {what} (numbers)",
        path,
        row + 2,
    )


def read_predictions(path: str | Path, id_column: str | None = None) -> ClassTable:
    """Read a prediction table; unpacks as `(ids, classes, probs)`.

    Every column except the id column is a class. Blank, NaN or out-of-range
    probabilities and repeated ids are refused, naming the line.
    """
    path = Path(path)
    frame, column = _read_frame(path, id_column, "predictions")
    classes = [c for c in frame.columns if c != column]
    if not classes:
        raise InputError(f"the predictions file has only the id column {column!r}; expected one column per class", path)
    _check_unique_classes(classes, path)
    probs = np.column_stack([_numeric_column(frame, c, column, path, "probabilities") for c in classes])
    bad = ~((probs >= 0) & (probs <= 1))  # also true for NaN
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = "blank or NaN" if np.isnan(probs[row, col]) else f"{probs[row, col]:g}"
        raise InputError(
            f"the probability of {classes[col]!r} for image {frame[column].iloc[row]!r} is {value}; "
            f"every probability must be a number in [0, 1] ({int(bad.sum())} are not)",
            path,
            int(row) + 2,
        )
    return ClassTable(frame[column].to_numpy(dtype=object), tuple(classes), probs, path, column)


def write_labels(path: str | Path, image_ids: Sequence[str], classes: Sequence[str], labels: np.ndarray,
                 id_column: str = "image_id") -> Path:
    """Write a label file atomically: the id column and one 1 / 0 / blank (missing) column per class.

    The format `read_label_csv` reads, so a run's saved labels can be
    re-scored (`cxrlt evaluate --predictions ... --labels ...`).
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=np.float64)
    frame = pd.DataFrame({id_column: [str(i) for i in image_ids],
                          **{str(name): labels[:, j] for j, name in enumerate(classes)}})
    return write_dataframe_csv(path, frame, float_format="%g")


def read_label_csv(
    path: str | Path,
    id_column: str | None = None,
    classes: Sequence[str] | None = None,
    allow_missing_classes: bool = False,
) -> ClassTable:
    """Read a label file for scoring: 1 / 0 / blank (missing) per class.

    With `classes` (the classes a prediction table scores), those columns
    are read (matched by canonical name and returned under the given
    spelling). Another column holding only 1, 0, -1 or blank is a labelled
    class the predictions lack: refused (naming it) unless
    `allow_missing_classes`, so that a table missing a class is never
    quietly scored on fewer classes; other columns (metadata) are ignored.
    Without `classes`, every column but the id column and the `LabelTable`
    metadata columns is a class. Values other than 0, 1 and blank are
    refused, naming the line (-1, CheXpert's "uncertain", must be mapped by
    a policy first).
    """
    path = Path(path)
    frame, column = _read_frame(path, id_column, "labels")
    if classes is None:
        names = [c for c in frame.columns if c != column and c not in META_COLUMNS]
        if not names:
            raise InputError(f"the labels file has no class columns besides {column!r} and metadata", path)
        _check_unique_classes(names, path)
        wanted = names
    else:
        wanted = [str(c) for c in classes]
        by_key = {canonical_key(c): c for c in frame.columns if c != column}
        missing = [c for c in wanted if c not in frame.columns and canonical_key(c) not in by_key]
        if missing:
            raise InputError(
                f"the labels file has no column for {len(missing)} of the {len(wanted)} classes "
                f"({_list(missing)}); its columns are {_list(list(frame.columns))}",
                path,
                1,
            )
        names = [c if c in frame.columns else by_key[canonical_key(c)] for c in wanted]
        if not allow_missing_classes:
            _refuse_unpredicted(frame, column, names, path)
    labels = np.column_stack([_numeric_column(frame, c, column, path, "labels 0 or 1") for c in names])
    known = ~np.isnan(labels)
    bad = known & (labels != 0) & (labels != 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        hint = " (-1 marks an uncertain label: map it with an uncertainty policy first)" if labels[row, col] == -1 else ""
        raise InputError(
            f"the label of {names[col]!r} for image {frame[column].iloc[row]!r} is {labels[row, col]:g}; "
            f"labels must be 1, 0 or blank (missing){hint}; {int(bad.sum())} value(s) are not",
            path,
            int(row) + 2,
        )
    return ClassTable(frame[column].to_numpy(dtype=object), tuple(wanted), labels, path, column)


def _refuse_unpredicted(frame: pd.DataFrame, id_column: str, scored: list[str], path: Path) -> None:
    """InputError when label columns (1 / 0 / -1 / blank only) exist for classes that are not `scored`."""
    others = [c for c in frame.columns if c != id_column and c not in scored and c not in META_COLUMNS]
    unscored = [c for c in others if _holds_labels(frame[c])]
    if unscored:
        raise InputError(
            f"the labels file has label columns for {len(unscored)} class(es) the predictions do not score "
            f"({_list(unscored)}); scoring the others alone would quietly change which classes the means are "
            "over. Predict every labelled class, or give --allow-missing-classes to score only the predicted ones",
            path,
            1,
        )


def _holds_labels(series: pd.Series) -> bool:
    """Whether a column holds label values only (1, 0, -1 or blank) and at least one of them."""
    numbers = pd.to_numeric(series, errors="coerce")
    known = numbers.notna()
    return bool(known.any()) and not (series.notna() & ~known).any() and bool(numbers[known].isin((0, 1, -1)).all())


def _check_unique_classes(classes: Sequence[str], path: Path) -> None:
    seen: dict[str, str] = {}
    for name in classes:
        key = canonical_key(name)
        if key in seen:
            raise InputError(f"columns {seen[key]!r} and {name!r} name the same class", path, 1)
        seen[key] = name


def read_patients(path: str | Path, ids: Sequence[str], column: str, id_column: str | None = None) -> np.ndarray:
    """Patient id of each of `ids`, read from `column` of a label CSV (matched by image id).

    Blank patient ids are allowed (each such image is a patient of its own);
    a missing column or image is an InputError naming the file.
    """
    path = Path(path)
    frame, id_name = _read_frame(path, id_column, "labels")
    if column not in frame.columns:
        raise InputError(f"the patient id column {column!r} is not in the labels file; its columns are "
                         f"{_list(list(frame.columns))}", path, 1)
    values = frame[column].astype(object).where(frame[column].notna(), None)
    rows = pd.Index(frame[id_name]).get_indexer(pd.Index([str(i) for i in ids]))
    if (rows < 0).any():
        missing = [str(i) for i, r in zip(ids, rows) if r < 0]
        raise InputError(f"{len(missing)} image(s) have no row in the labels file, e.g. {_list(missing, 3)}", path)
    return np.array([None if v is None else str(v) for v in values.to_numpy()[rows]], dtype=object)


def _list(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(str(i)) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def quote_examples(items: Sequence[str]) -> str:
    """The first few `items` quoted for an error message, "..." when there are more."""
    return ", ".join(repr(str(i)) for i in items[:_EXAMPLES]) + (", ..." if len(items) > _EXAMPLES else "")


def match_tables(first: ClassTable, other: ClassTable, purpose: str) -> tuple[np.ndarray, list[int]]:
    """Rows and columns of `other` in `first`'s order (ids exactly, classes by canonical name).

    Two prediction tables that must score the same images and classes
    (paired comparison, ensemble members). InputError naming both files, the
    classes only one of them has and example ids only one of them has;
    `purpose` ends the message with why they must match.
    """
    where = f"the prediction tables {first.name} and {other.name}"
    columns = {canonical_key(c): j for j, c in enumerate(other.classes)}
    first_keys = {canonical_key(c) for c in first.classes}
    only_first = [c for c in first.classes if canonical_key(c) not in columns]
    only_other = [c for c in other.classes if canonical_key(c) not in first_keys]
    if only_first or only_other or len(columns) != len(first_keys):
        parts = [f"{len(names)} class(es) only in the {side} ({quote_examples(names)})"
                 for names, side in ((only_first, "first"), (only_other, "second")) if names]
        raise InputError(f"{where} do not have the same classes: {'; '.join(parts) or 'repeated columns'}; {purpose}")
    first_ids = pd.Index(first.ids)
    rows = pd.Index(other.ids).get_indexer(first_ids)
    if (rows < 0).any() or len(other) != len(first):
        missing = [str(i) for i, r in zip(first.ids, rows) if r < 0]
        extra = [str(i) for i in pd.Index(other.ids).difference(first_ids, sort=False)]
        parts = [f"{len(ids)} of the {size} ids of {a} are not in {b} (e.g. {quote_examples(ids)})"
                 for ids, size, a, b in ((missing, len(first), first.name, other.name),
                                         (extra, len(other), other.name, first.name)) if ids]
        raise InputError(f"{where} do not cover the same images (matched by image id): {'; '.join(parts)}; {purpose}")
    return np.asarray(rows), [columns[canonical_key(c)] for c in first.classes]


# ---------------------------------------------------------------------------- align
def align(pred: ClassTable, labels: ClassTable) -> Aligned:
    """Match labels to predictions by image id and class name.

    Rows and classes follow the prediction table. Refused (InputError
    naming both files): class sets that differ, and ids present on one side
    only, with how many on each side and examples.
    """
    where = f"predictions {pred.name} and labels {labels.name}"
    pred_keys = [canonical_key(c) for c in pred.classes]
    label_keys = {canonical_key(c): j for j, c in enumerate(labels.classes)}
    only_pred = [c for c, k in zip(pred.classes, pred_keys) if k not in label_keys]
    only_labels = [c for c in labels.classes if canonical_key(c) not in set(pred_keys)]
    for table in (pred, labels):
        if not pd.Index(table.ids).is_unique:
            raise InputError(f"image ids repeat in {table.name}; each image must appear once")
    if only_pred or only_labels:
        parts = []
        if only_pred:
            parts.append(f"{len(only_pred)} predicted class(es) have no label column ({_list(only_pred)})")
        if only_labels:
            parts.append(f"{len(only_labels)} labelled class(es) have no prediction column ({_list(only_labels)})")
        raise InputError(
            f"the {where} do not cover the same classes: {'; '.join(parts)}; both files need one column per class "
            "with the same names"
        )
    label_index = pd.Index(labels.ids)
    rows = label_index.get_indexer(pd.Index(pred.ids))
    if (rows < 0).any() or len(labels) != len(pred):
        pred_only = [i for i, r in zip(pred.ids, rows) if r < 0]
        label_only = list(label_index.difference(pd.Index(pred.ids), sort=False))
        parts = []
        if pred_only:
            parts.append(f"{len(pred_only)} of the {len(pred)} predicted ids have no labels (e.g. {quote_examples(pred_only)})")
        if label_only:
            parts.append(
                f"{len(label_only)} of the {len(labels)} labelled ids have no prediction (e.g. {quote_examples(label_only)})"
            )
        raise InputError(
            f"the {where} do not cover the same images (matched by {pred.id_column!r} / {labels.id_column!r}): "
            f"{'; '.join(parts)}{_id_hint(pred.ids, labels.ids)}; predict the labelled images, or score a label "
            "file restricted to the predicted ones"
        )
    columns = [label_keys[k] for k in pred_keys]
    return Aligned(pred.ids, pred.classes, pred.values, labels.values[rows][:, columns])


def _id_hint(pred_ids: np.ndarray, label_ids: np.ndarray) -> str:
    """Say so when the ids differ only by folder or file extension."""
    if {Path(str(i)).stem for i in pred_ids} == {Path(str(i)).stem for i in label_ids}:
        return " (the ids differ only by folder or file extension: write both files with the same kind of id)"
    return ""
