"""Label-file readers (one per dataset format) and `load_table` for a run's data.

A reader is a function registered in `cxrlt.registry.SOURCES` by its own
module (this package imports them all); its annotated keyword parameters
are the YAML schema of `data.sources` entries, e.g.
`{name: nih, labels: Data_Entry_2017.csv, train_list: train_val_list.txt}`.
Each returns a `LabelTable`. Malformed files raise `InputError` naming the
file and the offending lines (the header is line 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cxrlt.data.sources import chexpert, csv_table, mimic, nih, synthetic  # noqa: F401  (they register themselves)

if TYPE_CHECKING:
    import numpy as np

    from cxrlt.config import DataConfig
    from cxrlt.data.table import LabelTable

# Metadata column `load_table` adds: the position in `data.sources` of the source each row came from.
SOURCE_INDEX = "source_index"


def load_table(data: "DataConfig") -> "LabelTable":
    """Read every source of `data`, map them to one class list, merge and split.

    Classes are `data.classes` (a label space name or a list), else the
    first source's. A reader taking the `run_classes` context is given them
    and returns every one it annotates; a class a source does not annotate
    becomes missing (NaN) or 0 as `data.unannotated` says. With several
    sources, image paths are made absolute (the tables have different
    roots). With `data.pseudo_labels`, the training rows' unannotated
    classes are then filled from the teacher's table
    (`cxrlt.data.pseudo_labels`). Each row records the position of its source in `data.sources`
    (meta column `SOURCE_INDEX`, read with `source_positions`). Splits are
    assigned by `cxrlt.data.splits.assign_splits` per `data.split`.
    """
    import pandas as pd

    from cxrlt.data.splits import assign_splits
    from cxrlt.data.table import LabelTable
    from cxrlt.errors import ConfigError
    from cxrlt.labels import class_mapping, resolve_classes

    # A reader given the run's classes supplies every one of them it annotates (NIH: No Finding),
    # so that `unannotated` applies only to the classes a source does not annotate.
    named = resolve_classes(data.classes) if data.classes is not None else None
    tables = [spec.build(run_classes=named) for spec in data.sources]
    classes = named if named is not None else tables[0].classes
    mapped = []
    for i, (spec, table) in enumerate(zip(data.sources, tables), start=1):
        if all(index is None for index in class_mapping(table.classes, classes)):
            raise ConfigError(
                f"data.sources.{i - 1} ({spec.name}) annotates none of the classes {', '.join(classes)}; "
                f"its classes are {', '.join(table.classes)}"
            )
        selected = table.select_classes(classes, data.unannotated)
        selected.meta[SOURCE_INDEX] = i - 1
        mapped.append(selected)
    if len(mapped) > 1:
        ids = pd.concat([t.meta["image_id"].astype(str) for t in mapped], keys=range(len(mapped)))
        repeated = ids[ids.duplicated(keep=False)]
        if len(repeated):
            image_id = repeated.iloc[0]
            where = sorted({int(k) for k in repeated[repeated == image_id].index.get_level_values(0)})
            raise ConfigError(
                f"image id {image_id!r} occurs in data.sources.{where[0]} and data.sources.{where[-1]} "
                f"({len(repeated)} rows share ids across sources); a source is listed twice, or two files overlap"
            )
    table = mapped[0] if len(mapped) == 1 else LabelTable.concat(mapped)
    table = assign_splits(table, data.split)
    if data.pseudo_labels is not None:
        from cxrlt.data.pseudo_labels import apply_pseudo_labels

        table = apply_pseudo_labels(table, source_positions(table), data.pseudo_labels)
    return table


def source_positions(table: "LabelTable") -> "np.ndarray":
    """Position in `data.sources` of the source of each row of a table `load_table` made (int64)."""
    if SOURCE_INDEX not in table.meta.columns:
        raise ValueError("this table was not made by load_table: it does not record the source of its rows")
    return table.meta[SOURCE_INDEX].to_numpy(dtype="int64")
