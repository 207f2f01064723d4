"""Study-level predictions: merge the images of one study (frontal and lateral views) into one prediction.

A radiologist reads a study, not an image, and the CXR-LT solutions score
per study (seed 003 notes all images of a study share its labels). For
each class the probabilities of a study's images are merged by

* `max`: the highest (a finding seen on any view counts);
* `mean`: the arithmetic mean;
* `logit_mean`: the sigmoid of the mean logit (a geometric-style mean that
  lets one confident view outweigh an unsure one less than `max` does);
  probabilities are clipped to [1e-6, 1 - 1e-6] first so 0 and 1 stay finite.

A study's label is the union of its images' labels: positive when any
image is positive, negative when none is positive and at least one is
negative, missing when all are missing. Images without a study id are left
out and counted (`excluded_images`), never silently merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlt.errors import ConfigError, InputError
from cxrlt.evaluation.metadata import Attribute

AGGREGATIONS = ("max", "mean", "logit_mean")
STUDY_COLUMNS = ("study_id", "StudyInstanceUID", "study")
_EPS = 1e-6


@dataclass(frozen=True)
class Studies:
    """Per-study predictions (and labels, patients when given) and how they were made."""

    ids: np.ndarray
    probs: np.ndarray
    labels: np.ndarray | None
    patients: np.ndarray | None
    method: str
    n_images: int
    excluded_images: int

    def summary(self) -> dict[str, Any]:
        """The report's `aggregate` section."""
        return {"unit": "study", "method": self.method, "n_images": self.n_images, "n_studies": len(self.ids),
                "excluded_images": self.excluded_images, "labels": "union of the study's image labels"}


def check_method(method: str) -> str:
    if method not in AGGREGATIONS:
        raise ConfigError(f"unknown study aggregation {method!r}; choose one of: {', '.join(AGGREGATIONS)}")
    return method


def aggregate_studies(study_ids: Sequence[Any], probs: np.ndarray, labels: np.ndarray | None = None,
                      method: str = "max", patients: Sequence[Any] | None = None) -> Studies:
    """Merge image rows into study rows (studies in order of first appearance).

    `study_ids` has one id per image; None / NaN / blank ids are left out and
    counted. `labels` (images x classes, 1 / 0 / NaN) become the union per
    study; `patients` the first image's patient of each study.
    """
    check_method(method)
    probs = np.asarray(probs, dtype=np.float64)
    ids = pd.Series(list(study_ids), dtype=object)
    if len(ids) != len(probs):
        raise ValueError(f"{len(ids)} study ids for {len(probs)} images")
    known = _known(ids)
    if not known.any():
        raise InputError(f"none of the {len(ids)} images has a study id: study-level scoring needs study ids "
                         "(a study_id / StudyInstanceUID column, or DICOM files)")
    codes, uniques = pd.factorize(ids[known].astype(str).str.strip())
    n = len(uniques)
    kept = probs[known]
    if method == "max":
        merged = np.full((n, probs.shape[1]), -np.inf)
        np.maximum.at(merged, codes, kept)
    else:
        values = kept if method == "mean" else _logit(kept)
        merged = np.zeros((n, probs.shape[1]))
        np.add.at(merged, codes, values)
        merged /= np.bincount(codes, minlength=n)[:, None]
        if method == "logit_mean":
            merged = 1.0 / (1.0 + np.exp(-merged))
    union = None
    if labels is not None:
        y = np.asarray(labels, dtype=np.float64)[known]
        positive = np.zeros((n, y.shape[1]))
        np.maximum.at(positive, codes, np.nan_to_num(y == 1).astype(np.float64))
        seen = np.zeros((n, y.shape[1]))
        np.maximum.at(seen, codes, (~np.isnan(y)).astype(np.float64))
        union = np.where(positive > 0, 1.0, np.where(seen > 0, 0.0, np.nan))
    first_patient = None
    if patients is not None:
        p = np.asarray(list(patients), dtype=object)[known]
        first = np.unique(codes, return_index=True)[1]
        first_patient = p[first]
    return Studies(np.asarray(uniques, dtype=object), merged, union, first_patient, method, len(probs),
                   int((~known).sum()))


def _known(ids: pd.Series) -> np.ndarray:
    """Images with a study id (not None, NaN or blank)."""
    return ~(ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def find_study_column(columns: Sequence[str]) -> str | None:
    folded = {str(c).strip().lower(): str(c) for c in columns}
    for name in STUDY_COLUMNS:
        if name.lower() in folded:
            return folded[name.lower()]
    return None


def read_study_ids(path: str | Path, ids: Sequence[str], column: str | None = None,
                   id_column: str | None = None) -> np.ndarray:
    """The study id of each of `ids` from a CSV keyed by image id (None where blank).

    The column is `column`, else the first of `STUDY_COLUMNS` present; an
    image without a row is an error naming the file.
    """
    from cxrlt.evaluation.predictions import read_id_table

    path = Path(path)
    frame, id_name = read_id_table(path, id_column, "study")
    name = column if column is not None else find_study_column(frame.columns)
    if name is None or name not in frame.columns:
        looked = repr(column) if column is not None else ", ".join(map(repr, STUDY_COLUMNS))
        raise InputError(f"no study id column (looked for {looked}); its columns are "
                         f"{', '.join(map(repr, map(str, frame.columns[:20])))}", path, 1)
    rows = pd.Index(frame[id_name]).get_indexer(pd.Index([str(i) for i in ids]))
    if (rows < 0).any():
        missing = [str(i) for i, r in zip(ids, rows) if r < 0]
        raise InputError(f"{len(missing)} of the {len(ids)} images have no row in the study table "
                         f"(matched by {id_name!r}), e.g. {', '.join(map(repr, missing[:3]))}", path)
    values = frame[name].astype(object).where(frame[name].notna(), None).to_numpy()[rows]
    return np.array([None if v is None or not str(v).strip() else str(v).strip() for v in values], dtype=object)


def study_attributes(attributes: dict[str, Attribute], study_ids: np.ndarray) -> dict[str, Attribute]:
    """Each attribute per study (the study's first image's value, studies in order of first appearance).

    Sex, age and source belong to the patient and the visit, the same for
    every image of a study; a view does not (a study holds a frontal and a
    lateral), so view subgroups of studies are refused.
    """
    if "view" in attributes:
        raise ConfigError("view subgroups cannot be scored per study: a study mixes views (frontal and lateral); "
                          "drop view from the subgroups or score images")
    ids = pd.Series(list(study_ids), dtype=object)
    known = _known(ids)
    _, first = np.unique(pd.factorize(ids[known].astype(str).str.strip())[0], return_index=True)
    return {name: Attribute(a.name, a.column, a.values[known][first]) for name, a in attributes.items()}
