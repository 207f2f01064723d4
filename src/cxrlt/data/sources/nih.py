"""NIH ChestX-ray14: `Data_Entry_2017.csv` (either release) and the official lists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlt.data.sources._reading import (
    SHOWN,
    CsvFile,
    check_images_folder,
    format_lines,
    normalise_sex,
    parse_categorical,
    quote,
    read_bytes,
)
from cxrlt.data.table import LabelTable
from cxrlt.errors import InputError
from cxrlt.labels import NIH14, canonical_key
from cxrlt.registry import SOURCES

NO_FINDING = "No Finding"

# role -> accepted header spellings (compared without case or punctuation);
# the 2017 and 2020 releases differ slightly in wording.
COLUMNS = {
    "image": ("Image Index", "Image"),
    "findings": ("Finding Labels", "Findings"),
    "patient": ("Patient ID", "Patient"),
    "age": ("Patient Age", "Age"),
    "sex": ("Patient Gender", "Patient Sex", "Gender", "Sex"),
    "view": ("View Position", "View"),
}

_AGE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([YMWD]?)\s*$", re.IGNORECASE)
_AGE_UNIT = {"": 1.0, "y": 1.0, "m": 1 / 12, "w": 7 / 365.25, "d": 1 / 365.25}


@SOURCES.register("nih", context=("run_classes",))
def nih(
    labels: Path,
    train_list: Path | None = None,
    test_list: Path | None = None,
    images: Path | None = None,
    no_finding: bool = False,
    run_classes: Sequence[str] | None = None,
) -> LabelTable:
    """Read NIH ChestX-ray14 labels (`Data_Entry_2017.csv`, `_v2020`, plain or .gz).

    Classes are the 14 findings in `cxrlt.labels.NIH14` order, plus a "No
    Finding" column when `no_finding` is true or the run's class list
    (`run_classes`, given by `load_table`) has No Finding: NIH annotates it (1
    on the images labelled "No Finding", 0 on the others), so a label space
    with No Finding takes it from NIH, never as a class NIH leaves out.
    Labels are complete (0 / 1). "No Finding" combined with a finding in
    one row is an error.

    With the official lists, images of `train_list` (train_val_list.txt) get
    split "train" and those of `test_list` get "test" (validation is carved
    later, see `cxrlt.data.splits`); an image in both lists, or in neither
    when both are given, is an error. With one list only, the other images
    get the other split. Names in a list but absent from the label file are
    ignored (a label file cut down to the images one has is fine).

    Ages written like "058Y" / "011M" (early releases) are read in years.
    """
    file = CsvFile(labels, "NIH label file (Data_Entry_2017.csv)")
    col = file.require({role: COLUMNS[role] for role in ("image", "findings", "patient")})
    optional = {role: file.find(*COLUMNS[role]) for role in ("age", "sex", "view")}
    dtypes = {col["image"]: str, col["findings"]: "category", col["patient"]: str}
    dtypes.update({c: "category" for c in optional.values() if c is not None})
    frame = file.read(dtypes)
    file.check_required_values(frame, [col["image"], col["findings"], col["patient"]])
    image_ids = frame[col["image"]].str.strip()
    file.check_unique(image_ids, f"column {col['image']!r}")

    asked = {canonical_key(name) for name in run_classes or ()}
    columns = NIH14 + ((NO_FINDING,) if no_finding or canonical_key(NO_FINDING) in asked else ())
    label_matrix = _decode_findings(file, frame[col["findings"]], columns)

    meta = pd.DataFrame(
        {
            "image_id": image_ids,
            "path": image_ids,
            "patient_id": frame[col["patient"]].str.strip(),
            "view": None if optional["view"] is None else frame[optional["view"]].astype("str").str.strip(),
            "sex": None if optional["sex"] is None else normalise_sex(frame[optional["sex"]]),
            "age": np.nan if optional["age"] is None else _decode_age(file, frame[optional["age"]], optional["age"]),
            "source": "nih",
        }
    )
    if train_list is not None or test_list is not None:
        meta["split"] = _official_split(file, image_ids, train_list, test_list)
    return LabelTable(meta, label_matrix, columns, check_images_folder(images))


def _decode_findings(file: CsvFile, findings: pd.Series, classes: tuple[str, ...]) -> np.ndarray:
    """Label matrix from "A|B" strings, decoding each distinct string once."""
    position = {canonical_key(name): j for j, name in enumerate(NIH14)}
    no_finding_key = canonical_key(NO_FINDING)
    categories = list(findings.cat.categories)
    table = np.zeros((len(categories), len(classes)), dtype=np.float32)
    problems: dict[int, str] = {}
    for i, text in enumerate(categories):
        names = [name.strip() for name in str(text).split("|")]
        keys = [canonical_key(name) for name in names]
        unknown = [name for name, key in zip(names, keys) if key not in position and key != no_finding_key]
        if unknown:
            problems[i] = f"unknown finding {unknown[0]!r}"
            continue
        if no_finding_key in keys and len(keys) > 1:
            problems[i] = f"{NO_FINDING!r} together with findings in {text!r}"
            continue
        for key in keys:
            if key == no_finding_key:
                if len(classes) > len(NIH14):
                    table[i, len(NIH14)] = 1.0
            else:
                table[i, position[key]] = 1.0
    codes = findings.cat.codes.to_numpy()
    if problems:
        bad = np.flatnonzero(np.isin(codes, list(problems)))
        raise InputError(
            f"Finding Labels must be findings of ChestX-ray14 ({', '.join(NIH14)}) or {NO_FINDING!r}, "
            "joined by '|': "
            + format_lines(file.lines[bad], [problems[codes[r]] for r in bad[:SHOWN]], len(bad)),
            file.path,
            int(file.lines[bad[0]]),
        )
    return table[codes]


def _decode_age(file: CsvFile, ages: pd.Series, column: str) -> np.ndarray:
    """Ages in years from "57", "057Y", "011M"..., blank -> NaN."""

    def convert(text: str) -> float | None:
        match = _AGE.match(text)
        if match is None:
            return None
        return float(match.group(1)) * _AGE_UNIT[match.group(2).lower()]

    values, invalid = parse_categorical(ages, convert)
    if invalid.any():
        rows = np.flatnonzero(invalid)
        raise file.row_error(
            f"column {column!r} must be an age in years (57, 057Y; M/W/D for months/weeks/days)",
            rows,
            [quote(ages.iloc[r]) for r in rows[:SHOWN]],
        )
    return values.astype(np.float64)


def read_image_list(path: Path) -> pd.Index:
    """Image names of an official list file, one per line (blank lines skipped)."""
    text = read_bytes(path).decode("utf-8", errors="replace")
    names = pd.Index([line.strip() for line in text.splitlines() if line.strip()])
    if names.empty:
        raise InputError("image list is empty; expected one image file name per line", path)
    return names.unique()


def _official_split(file: CsvFile, image_ids: pd.Series, train_list: Path | None, test_list: Path | None) -> np.ndarray:
    """Per-image "train"/"test" from the official lists, checking coverage."""
    in_train = image_ids.isin(read_image_list(train_list)).to_numpy() if train_list is not None else None
    in_test = image_ids.isin(read_image_list(test_list)).to_numpy() if test_list is not None else None
    if in_train is not None and in_test is not None:
        both = in_train & in_test
        if both.any():
            raise file.row_error(
                f"images are in both {train_list} and {test_list}; the official lists are disjoint", both
            )
        neither = ~(in_train | in_test)
        if neither.any():
            raise file.row_error(
                f"images are in neither {train_list} nor {test_list}; expected every image in exactly one list",
                neither,
            )
        return np.where(in_train, "train", "test")
    if in_train is not None:
        return np.where(in_train, "train", "test")
    return np.where(in_test, "test", "train")
