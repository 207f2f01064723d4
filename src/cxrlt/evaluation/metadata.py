"""Per-image metadata for subgroup scoring: sex, age band, view and source, read and normalised.

A metadata table is any CSV keyed by image id (a label file, NIH's
`Data_Entry_2017`, a run's saved labels with metadata). Its columns are found
by name, case-insensitively:

| attribute | columns looked for | values |
|---|---|---|
| sex | `sex`, `Patient Sex`, `Patient Gender` (NIH's file), `PatientSex`, `Gender` | F / Female / W -> `female`, M / Male -> `male` |
| age | `age`, `Patient Age`, `PatientAge` | years: numbers, or DICOM age strings (`058Y`, `006M`) |
| view | `view`, `View Position`, `ViewPosition`, `AP/PA` | `PA`, `AP`, lateral (`LL`, `RL`, `LAT`, `Lateral`) -> `lateral` |
| source | `source` | any text |

Ages are cut into bands at `edges` (default 20, 40, 60, 80: `0-20`, `20-40`,
`40-60`, `60-80`, `80+`; a band holds its lower edge). A blank cell is an
image without that attribute: it is left out of that attribute's subgroups
and counted (`excluded`). A value that is not blank and not understood (an
unknown sex or view, an age that is not a number) is an error naming the
file, line and what was expected: a typo never silently moves an image to
another subgroup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlt.errors import ConfigError, InputError

ATTRIBUTES = ("sex", "age", "view", "source")
DEFAULT_AGE_EDGES = (20.0, 40.0, 60.0, 80.0)
COLUMNS = {
    "sex": ("sex", "Patient Sex", "Patient Gender", "PatientSex", "Gender"),
    "age": ("age", "Patient Age", "PatientAge"),
    "view": ("view", "View Position", "ViewPosition", "AP/PA"),
    "source": ("source",),
}
_SEX = {"f": "female", "female": "female", "w": "female", "woman": "female",
        "m": "male", "male": "male", "man": "male"}
_VIEW = {"pa": "PA", "ap": "AP", "ll": "lateral", "rl": "lateral", "lat": "lateral", "lateral": "lateral",
         "latéral": "lateral"}
# DICOM Age String (PS3.5 VR AS): three digits and D / W / M / Y.
_DICOM_AGE = re.compile(r"^(\d{1,3})\s*([DWMY])$", re.IGNORECASE)
_DICOM_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


@dataclass(frozen=True)
class Attribute:
    """One attribute's subgroup per image (None where the cell is blank) and the column it was read from."""

    name: str
    column: str
    values: np.ndarray  # object: group name or None

    @property
    def excluded(self) -> int:
        """Images without a value (blank cell): left out of this attribute's subgroups."""
        return int(sum(v is None for v in self.values))

    def groups(self) -> list[str]:
        """The subgroups present, in a fixed order (age bands youngest first, others sorted)."""
        present = {v for v in self.values if v is not None}
        if self.name == "age":
            return sorted(present, key=_band_start)
        return sorted(present)


def parse_attributes(text: str | Sequence[str]) -> tuple[str, ...]:
    """`sex,age,view` (or a list) as attribute names, checked."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown or not names:
        raise ConfigError(f"subgroup attributes must be some of {', '.join(ATTRIBUTES)}; got "
                          f"{', '.join(map(repr, unknown)) or 'none'}")
    if len(set(names)) != len(names):
        raise ConfigError(f"subgroup attributes repeat: {', '.join(names)}")
    return tuple(names)


def check_age_edges(edges: Sequence[float]) -> tuple[float, ...]:
    """Age band edges: positive, strictly increasing numbers of years."""
    edges = tuple(float(e) for e in edges)
    if not edges or any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"age band edges must be positive and strictly increasing years, e.g. 20,40,60,80; "
                          f"got {', '.join(f'{e:g}' for e in edges) or 'none'}")
    return edges


def age_bands(ages: Sequence[float], edges: Sequence[float] = DEFAULT_AGE_EDGES) -> list[str | None]:
    """The band of each age (`0-20`, ..., `80+`); None for NaN."""
    edges = check_age_edges(edges)
    names = [f"{_fmt(lo)}-{_fmt(hi)}" for lo, hi in zip((0.0,) + edges, edges)] + [f"{_fmt(edges[-1])}+"]
    out: list[str | None] = []
    for age in ages:
        out.append(None if np.isnan(age) else names[int(np.searchsorted(edges, age, side="right"))])
    return out


def find_column(columns: Sequence[str], attribute: str) -> str | None:
    """The column holding `attribute`, by the names in `COLUMNS` (case-insensitive), or None."""
    folded = {str(c).strip().lower(): str(c) for c in columns}
    for name in COLUMNS[attribute]:
        if name.lower() in folded:
            return folded[name.lower()]
    return None


def read_attributes(path: str | Path, ids: Sequence[str], attributes: Sequence[str],
                    id_column: str | None = None, age_edges: Sequence[float] = DEFAULT_AGE_EDGES
                    ) -> dict[str, Attribute]:
    """The subgroup of each of `ids` for each attribute, read from the metadata CSV at `path`.

    Rows are matched by image id; an id without a row, a missing column, an
    unknown value or an age that is not a number is an InputError naming the
    file (and the line).
    """
    from cxrlt.evaluation.predictions import read_id_table

    path = Path(path)
    frame, id_name = read_id_table(path, id_column, "metadata")
    rows = pd.Index(frame[id_name]).get_indexer(pd.Index([str(i) for i in ids]))
    if (rows < 0).any():
        missing = [str(i) for i, r in zip(ids, rows) if r < 0]
        shown = ", ".join(map(repr, missing[:3])) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"{len(missing)} of the {len(ids)} scored images have no row in the metadata table "
                         f"(matched by {id_name!r}), e.g. {shown}", path)
    out = {}
    for attribute in attributes:
        column = find_column(frame.columns, attribute)
        if column is None:
            raise InputError(f"no {attribute} column for the {attribute} subgroups (looked for "
                             f"{', '.join(map(repr, COLUMNS[attribute]))}); its columns are "
                             f"{', '.join(map(repr, map(str, frame.columns[:20])))}", path, 1)
        values = normalise_column(frame[column], attribute, path, age_edges)
        out[attribute] = Attribute(attribute, column, np.array(values, dtype=object)[rows])
    return out


def normalise_column(series: pd.Series, attribute: str, path: str | Path | None = None,
                     age_edges: Sequence[float] = DEFAULT_AGE_EDGES) -> list[str | None]:
    """One metadata column as subgroup names (None for blank cells); bad values are an InputError with the line."""
    if attribute == "age":
        return age_bands(_ages(series, path), age_edges)
    cells = [None if pd.isna(v) or not str(v).strip() else str(v).strip() for v in series.tolist()]
    if attribute == "source":
        return cells
    known = _SEX if attribute == "sex" else _VIEW
    out = []
    for row, cell in enumerate(cells):
        if cell is None:
            out.append(None)
            continue
        value = known.get(cell.lower())
        if value is None:
            expected = "F / Female or M / Male" if attribute == "sex" else "PA, AP or a lateral view (LL, LAT, Lateral)"
            raise InputError(f"the {attribute} column {series.name!r} holds {cell!r}; expected {expected} or "
                             "blank (unknown)", path, row + 2)
        out.append(value)
    return out


def _ages(series: pd.Series, path: str | Path | None) -> np.ndarray:
    """Ages in years (NaN for blank): numbers, or DICOM age strings such as `058Y`."""
    ages = np.full(len(series), np.nan)
    for row, value in enumerate(series.tolist()):
        if pd.isna(value) or not str(value).strip():
            continue
        text = str(value).strip()
        try:
            age = float(text)
        except ValueError:
            match = _DICOM_AGE.match(text)
            if match is None:
                raise InputError(f"the age column {series.name!r} holds {text!r}, which is not an age; expected "
                                 "years as a number (58) or a DICOM age (058Y), or blank", path, row + 2) from None
            age = int(match.group(1)) * _DICOM_UNIT_YEARS[match.group(2).upper()]
        if not np.isfinite(age) or age < 0:
            raise InputError(f"the age column {series.name!r} holds {text!r}; ages must be 0 or more years",
                             path, row + 2)
        ages[row] = age
    return ages


def _fmt(x: float) -> str:
    return f"{x:g}"


def _band_start(name: str) -> float:
    return float(name.rstrip("+").split("-")[0])


def attributes_from_frame(frame: pd.DataFrame, attributes: Sequence[str],
                          age_edges: Sequence[float] = DEFAULT_AGE_EDGES, where: str | None = None
                          ) -> dict[str, Attribute]:
    """Subgroups from a frame that already has the columns `sex`, `age`, `view`, `source` (a `LabelTable`'s meta).

    A column that is blank for every image is an error: the attribute was
    asked for but the label files did not record it.
    """
    out = {}
    for attribute in attributes:
        column = find_column(frame.columns, attribute)
        if column is None or frame[column].isna().all():
            raise InputError(f"subgroups by {attribute} were asked for, but the label files record no {attribute} "
                             f"for these images (looked for {', '.join(map(repr, COLUMNS[attribute]))})", where)
        out[attribute] = Attribute(attribute, column,
                                   np.array(normalise_column(frame[column], attribute, where, age_edges), dtype=object))
    return out
