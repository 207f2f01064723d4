"""MIMIC-CXR-JPG / CXR-LT: one row per image (dicom_id) with one column per class."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrlt.data.sources._reading import (
    SHOWN,
    CsvFile,
    apply_policies,
    check_images_folder,
    is_known_finding,
    normalise_split,
    read_label_columns,
)
from cxrlt.data.sources.chexpert import Blank, Uncertain
from cxrlt.data.table import LabelTable
from cxrlt.errors import InputError
from cxrlt.labels import canonical_key
from cxrlt.registry import SOURCES

ID_COLUMNS = {"dicom": ("dicom_id",), "subject": ("subject_id",), "study": ("study_id",)}
PATH_COLUMNS = ("path", "fpath", "file_path", "filepath")
VIEW_COLUMNS = ("ViewPosition", "view")
SPLIT_COLUMNS = ("split",)


@SOURCES.register("mimic")
def mimic(
    labels: Path,
    images: Path | None = None,
    classes: list[str] | None = None,
    uncertain: Uncertain = "ones",
    blank: Blank = "zeros",
) -> LabelTable:
    """Read a MIMIC-CXR-JPG / CXR-LT style label file (one row per image).

    Required columns: dicom_id, subject_id, study_id. Optional: the image
    path (`path` or `fpath`, relative to `images`; when absent it is built
    as files/pXX/pSUBJECT/sSTUDY/DICOM.jpg, the MIMIC-CXR-JPG layout),
    `ViewPosition` and `split` (train / validate / test). Classes are
    `classes` (matched to columns by name, any spelling), or else every
    column that names a known finding (`cxrlt.labels`), in file order.
    Values are 1, 0, -1 (uncertain) or blank, resolved by `uncertain` and
    `blank` as for CheXpert; CXR-LT files contain only 0 and 1.
    """
    file = CsvFile(labels, "MIMIC-CXR / CXR-LT label file")
    col = file.require(ID_COLUMNS)
    path_column = file.find(*PATH_COLUMNS)
    view_column = file.find(*VIEW_COLUMNS)
    split_column = file.find(*SPLIT_COLUMNS)
    used = {*col.values(), path_column, view_column, split_column} - {None}
    class_columns = _class_columns(file, classes, used)

    dtypes = {col["dicom"]: str, col["subject"]: str, col["study"]: str}
    dtypes.update({c: str for c in (path_column,) if c is not None})
    dtypes.update({c: "category" for c in (view_column, split_column) if c is not None})
    dtypes.update({c: "category" for c in class_columns})
    frame = file.read(dtypes)
    file.check_required_values(frame, col.values())
    dicom = frame[col["dicom"]].str.strip()
    file.check_unique(dicom, f"column {col['dicom']!r}")
    subject = frame[col["subject"]].str.strip()
    study = frame[col["study"]].str.strip()
    if path_column is not None:
        file.check_required_values(frame, [path_column])
        paths = frame[path_column].str.strip()
    else:
        paths = "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + dicom + ".jpg"

    raw = read_label_columns(file, frame, class_columns, (1.0, 0.0, -1.0), "1, 0, -1 or blank")
    meta = pd.DataFrame(
        {
            "image_id": dicom,
            "path": paths,
            "patient_id": subject,
            "study_id": study,
            "view": None if view_column is None else frame[view_column].astype("str").str.strip(),
            "split": None if split_column is None else normalise_split(file, frame[split_column], split_column),
            "source": "mimic",
        }
    )
    names = tuple(classes) if classes is not None else tuple(class_columns)
    return LabelTable(meta, apply_policies(raw, uncertain, blank), names, check_images_folder(images))


def _class_columns(file: CsvFile, classes: list[str] | None, used: set[str]) -> list[str]:
    """Header columns of the declared classes, or of every known finding."""
    free = [c for c in file.header if c not in used]
    if classes is None:
        found = [c for c in free if is_known_finding(c)]
        if not found:
            raise InputError(
                "no column names a known finding (e.g. Atelectasis, Pleural Effusion); "
                "declare the class columns with `classes`",
                file.path,
                1,
            )
        return found
    by_key = {canonical_key(c): c for c in free}
    missing = [name for name in classes if canonical_key(name) not in by_key]
    if missing:
        raise InputError(
            f"the header has no column for the class(es) {', '.join(map(repr, missing[:SHOWN]))}"
            f"{' and more' if len(missing) > SHOWN else ''}; the header has: {file.shown_header()}",
            file.path,
            1,
        )
    return [by_key[canonical_key(name)] for name in classes]

