"""CheXpert: `train.csv` / `valid.csv` of CheXpert-v1.0 (full or small)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cxrlt.data.sources._reading import (
    SHOWN,
    CsvFile,
    apply_policies,
    check_images_folder,
    normalise_sex,
    number,
    parse_categorical,
    quote,
    read_label_columns,
)
from cxrlt.data.table import LabelTable
from cxrlt.errors import ConfigError
from cxrlt.labels import CHEXPERT14
from cxrlt.registry import SOURCES

# patient and study from ".../patient00001/study1/view1_frontal.jpg"
_PATH_IDS = r"(?P<patient>patient\d+)/(?P<study>study\d+)/"
# The dataset folder ("CheXpert-v1.0-small/") is left out of image ids so that
# the full and the downsampled release give the same ids.
_RELEASE_PREFIX = r"^CheXpert-v1\.0[^/]*/"

Uncertain = Literal["ones", "zeros", "ignore"]
Blank = Literal["zeros", "ignore"]
View = Literal["frontal", "lateral", "ap", "pa"]


@SOURCES.register("chexpert")
def chexpert(
    labels: Path,
    images: Path | None = None,
    uncertain: Uncertain = "ones",
    blank: Blank = "zeros",
    views: list[View] | None = None,
) -> LabelTable:
    """Read a CheXpert label file (14 observations: 1, 0, -1 uncertain, blank).

    `uncertain` maps -1 to 1 (U-Ones), 0 (U-Zeros) or NaN (U-Ignore, masked);
    `blank` (not mentioned in the report) maps to 0 or NaN. `views` keeps
    the images matching any of: frontal / lateral ("Frontal/Lateral"
    column), ap / pa ("AP/PA" column); default all.

    Paths stay as written (relative to `images`, the folder holding
    "CheXpert-v1.0-small/"); image ids are the paths without that first
    folder. Patient and study ids are parsed from the path; the study id is
    "patientNNNNN/studyN" (study numbers restart for every patient). `view`
    is the AP/PA value for frontal images and "LATERAL" for lateral ones.
    """
    if views is not None and not views:
        raise ConfigError("chexpert views: empty list; leave it out to keep every view")
    file = CsvFile(labels, "CheXpert label file (train.csv / valid.csv)")
    col = file.require({"path": ("Path",), **{name: (name,) for name in CHEXPERT14}})
    optional = {name: file.find(name) for name in ("Sex", "Age", "Frontal/Lateral", "AP/PA")}
    dtypes = {col["path"]: str, **{col[name]: "category" for name in CHEXPERT14}}
    dtypes.update({c: "category" for c in optional.values() if c is not None})
    frame = file.read(dtypes)
    file.check_required_values(frame, [col["path"]])
    paths = frame[col["path"]].str.strip()
    ids = _path_ids(paths)
    unparsed = ids["patient"].isna().to_numpy()
    if unparsed.any():
        rows = np.flatnonzero(unparsed)
        raise file.row_error(
            "paths must contain .../patientNNNNN/studyN/... (patient and study are read from them)",
            rows,
            [repr(paths.iloc[r]) for r in rows[:SHOWN]],
        )
    image_ids = paths.str.replace(_RELEASE_PREFIX, "", regex=True)
    file.check_unique(image_ids, "image path")

    raw = read_label_columns(file, frame, [col[name] for name in CHEXPERT14], (1.0, 0.0, -1.0), "1, 0, -1 or blank")
    label_matrix = apply_policies(raw, uncertain, blank)

    frontal = _text(frame, optional["Frontal/Lateral"])
    ap_pa = _text(frame, optional["AP/PA"])
    view = ap_pa.where(ap_pa.notna(), frontal.str.upper().where(frontal.str.lower() == "lateral"))
    meta = pd.DataFrame(
        {
            "image_id": image_ids,
            "path": paths,
            "patient_id": ids["patient"],
            "study_id": ids["patient"] + "/" + ids["study"],
            "view": view,
            "sex": None if optional["Sex"] is None else normalise_sex(frame[optional["Sex"]]),
            "age": _age(file, frame, optional["Age"]),
            "source": "chexpert",
        }
    )
    table = LabelTable(meta, label_matrix, CHEXPERT14, check_images_folder(images))
    if views is not None:
        table = table.subset(_view_mask(file, views, frontal, ap_pa, optional))
    return table


def _path_ids(paths: pd.Series) -> pd.DataFrame:
    """Patient and study parsed from each path (pyarrow's regex runs in C++)."""
    matched = pc.extract_regex(pa.array(paths, type=pa.string()), _PATH_IDS)
    return pd.DataFrame(
        {
            name: pd.Series(pc.struct_field(matched, name).to_numpy(zero_copy_only=False), dtype="str")
            for name in ("patient", "study")
        }
    )


def _text(frame: pd.DataFrame, column: str | None) -> pd.Series:
    if column is None:
        return pd.Series(np.nan, index=frame.index, dtype="str")
    return frame[column].astype("str").str.strip()


def _age(file: CsvFile, frame: pd.DataFrame, column: str | None) -> np.ndarray | float:
    if column is None:
        return np.nan
    values, invalid = parse_categorical(frame[column], number)
    if invalid.any():
        rows = np.flatnonzero(invalid)
        raise file.row_error(
            f"column {column!r} must be a number (age in years) or blank",
            rows,
            [quote(frame[column].iloc[r]) for r in rows[:SHOWN]],
        )
    return values.astype(np.float64)


def _view_mask(
    file: CsvFile, views: list[str], frontal: pd.Series, ap_pa: pd.Series, optional: dict[str, str | None]
) -> np.ndarray:
    """Rows matching any requested view."""
    needed = {"frontal": "Frontal/Lateral", "lateral": "Frontal/Lateral", "ap": "AP/PA", "pa": "AP/PA"}
    keep = np.zeros(len(frontal), dtype=bool)
    for view in views:
        column = needed[view]
        if optional[column] is None:
            raise ConfigError(f"chexpert views: {view!r} needs the {column!r} column, which {file.path} lacks")
        values = (frontal if column == "Frontal/Lateral" else ap_pa).str.lower()
        keep |= (values == view).to_numpy(dtype=bool, na_value=False)
    return keep
