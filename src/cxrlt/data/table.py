"""`LabelTable`: one row per image, the contract between readers and the rest.

A table holds per-image metadata (a DataFrame) and a float32 label matrix
(1 positive, 0 negative, NaN missing; values in between only for soft labels
produced by mixing) in a fixed class order. Every reader produces one; splits,
statistics, datasets and metrics consume it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from cxrlt.errors import InputError
from cxrlt.io import write_dataframe_csv
from cxrlt.labels import canonical_key, map_labels

# Metadata columns every table carries (values may be missing: <NA>).
META_COLUMNS = ("image_id", "path", "patient_id", "study_id", "view", "sex", "age", "split", "source")
SPLITS = ("train", "val", "test")


@dataclass
class LabelTable:
    """Images, their metadata and their multi-label matrix.

    Attributes:
        meta: one row per image with the columns of `META_COLUMNS`; `image_id`
            is unique, `path` is relative to `image_root` (or absolute).
        labels: float32 array (images x classes); NaN marks a missing label.
        classes: class names in column order, as the source spells them.
        image_root: folder that relative paths are resolved against.
    """

    meta: pd.DataFrame
    labels: np.ndarray
    classes: tuple[str, ...]
    image_root: Path | None = None
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.float32)
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
        meta = self.meta.reset_index(drop=True)
        for column in META_COLUMNS:
            if column not in meta.columns:
                meta[column] = pd.NA
        self.meta = meta[list(META_COLUMNS) + [c for c in meta.columns if c not in META_COLUMNS]]
        self._check()

    def _check(self) -> None:
        if self.labels.ndim != 2 or self.labels.shape != (len(self.meta), len(self.classes)):
            raise ValueError(
                f"label matrix has shape {self.labels.shape}, expected ({len(self.meta)}, {len(self.classes)})"
            )
        if len({canonical_key(c) for c in self.classes}) != len(self.classes):
            raise InputError(f"class names repeat (after folding case and spelling): {', '.join(self.classes)}")
        ids = self.meta["image_id"]
        if ids.isna().any():
            raise InputError(f"{int(ids.isna().sum())} rows have no image id")
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            raise InputError(
                f"image ids must be unique; {len(duplicated)} repeat, first {duplicated.iloc[0]!r}"
            )
        finite = self.labels[np.isfinite(self.labels)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise InputError("labels must lie in [0, 1] (1 positive, 0 negative, NaN missing)")
        bad_split = set(self.meta["split"].dropna().unique()) - set(SPLITS)
        if bad_split:
            raise InputError(f"unknown split names {sorted(bad_split)}; expected {', '.join(SPLITS)}")

    # ------------------------------------------------------------------ size
    def __len__(self) -> int:
        return len(self.meta)

    @property
    def n_classes(self) -> int:
        """Number of classes (columns of `labels`)."""
        return len(self.classes)

    @property
    def image_ids(self) -> list[str]:
        """Image ids in row order."""
        return self.meta["image_id"].astype(str).tolist()

    # ----------------------------------------------------------- selection
    def subset(self, rows: np.ndarray | Sequence[int] | Sequence[bool]) -> "LabelTable":
        """A new table with the given rows (integer positions or a boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return LabelTable(self.meta.iloc[rows].reset_index(drop=True), self.labels[rows], self.classes, self.image_root)

    def patient_groups(self) -> np.ndarray:
        """One group key per image: source + patient id, or the image id when there is no patient id.

        What every patient-wise operation groups by (splits, folds, patient counts).
        """
        patient = self.meta["patient_id"].astype("str")
        source = self.meta["source"].astype("str").fillna("")
        keys = ("p\x1f" + source + "\x1f" + patient).where(patient.notna(), "i\x1f" + self.meta["image_id"].astype("str"))
        return keys.to_numpy(dtype=object)

    def split(self, name: str) -> "LabelTable":
        """The rows assigned to split `name` (train, val or test)."""
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return self.subset((self.meta["split"] == name).fillna(False).to_numpy(dtype=bool))

    def with_splits(self, splits: Sequence[str | None] | np.ndarray | pd.Series) -> "LabelTable":
        """A copy whose `split` column is replaced by `splits`."""
        meta = self.meta.copy()
        meta["split"] = pd.Series(list(splits), dtype="object").where(lambda s: s.notna(), pd.NA).to_numpy()
        return LabelTable(meta, self.labels, self.classes, self.image_root)

    def select_classes(
        self, classes: Sequence[str], unannotated: Literal["missing", "zero"] = "missing"
    ) -> "LabelTable":
        """Re-express labels in `classes` (matched by canonical name)."""
        labels = map_labels(self.labels, self.classes, classes, unannotated)
        return LabelTable(self.meta.copy(), labels, tuple(classes), self.image_root)

    # --------------------------------------------------------------- paths
    def image_paths(self) -> list[Path]:
        """Absolute (or root-joined) image paths in row order."""
        root = self.image_root
        paths = []
        for value in self.meta["path"].tolist():
            path = Path(str(value))
            paths.append(path if path.is_absolute() or root is None else root / path)
        return paths

    def fingerprint(self) -> str:
        """A short hash of ids and paths: identifies the image list of a cache."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for image_id, path in zip(self.meta["image_id"].astype(str), self.meta["path"].astype(str)):
                digest.update(image_id.encode())
                digest.update(b"\0")
                digest.update(path.encode())
                digest.update(b"\n")
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    # ---------------------------------------------------------- conversion
    def to_frame(self) -> pd.DataFrame:
        """Metadata plus one column per class (blank = missing)."""
        frame = self.meta.copy()
        for j, name in enumerate(self.classes):
            frame[name] = self.labels[:, j]
        return frame

    def save_csv(self, path: str | Path) -> Path:
        """Write the table as a CSV readable by the `csv` source (atomic)."""
        return write_dataframe_csv(path, self.to_frame())

    @classmethod
    def concat(cls, tables: Iterable["LabelTable"]) -> "LabelTable":
        """Stack tables that share one class list (map them first if needed).

        Relative paths are made absolute against each table's root, since the
        result has no single root.
        """
        tables = list(tables)
        if not tables:
            raise ValueError("nothing to concatenate")
        classes = tables[0].classes
        metas = []
        for table in tables:
            if table.classes != classes:
                raise ValueError("tables must share the same classes; map them with select_classes first")
            meta = table.meta.copy()
            meta["path"] = [str(p) for p in table.image_paths()]
            metas.append(meta)
        return cls(pd.concat(metas, ignore_index=True), np.concatenate([t.labels for t in tables]), classes, None)
