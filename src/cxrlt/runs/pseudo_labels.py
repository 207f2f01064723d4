"""Writing a pseudo-label table: a teacher run's probabilities for the classes each source does not annotate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlt.config import DataConfig
from cxrlt.data.pseudo_labels import pseudo_label_frame, unannotated_classes
from cxrlt.data.sources import load_table, source_positions
from cxrlt.errors import ConfigError
from cxrlt.inference.predict import Predictor
from cxrlt.io import write_dataframe_csv


def write_pseudo_labels(teacher: str | Path, data: DataConfig, out: str | Path, batch_size: int = 32,
                        progress: bool = True) -> pd.DataFrame:
    """Predict with the saved model in `teacher` every image outside the test split of a source that lacks
    some class of `data`, and write the table (`cxrlt.data.pseudo_labels`) to `out`.

    The teacher is applied as it was evaluated (its eval transforms and
    TTA); it must know each class to fill (by canonical name, so "Effusion"
    fills "Pleural Effusion"). `data.pseudo_labels` is ignored: the table
    is made from the sources' own labels.
    """
    table = load_table(data.model_copy(update={"pseudo_labels": None}))
    positions = source_positions(table)
    missing = unannotated_classes(table, positions)
    lacking = [source for source, columns in missing.items() if columns]
    if not lacking:
        raise ConfigError("every source of data.sources annotates every class of the run: there is nothing for "
                          "pseudo-labels to fill")
    needed = sorted({j for source in lacking for j in missing[source]})
    predictor = Predictor.load(teacher, classes=[table.classes[j] for j in needed])
    rows = np.flatnonzero(np.isin(positions, lacking) & (table.meta["split"] != "test").to_numpy())
    predicted = predictor.predict(table.subset(rows).image_paths(), batch_size=batch_size, progress=progress)
    probabilities = np.full((len(rows), len(table.classes)), np.nan)
    probabilities[:, needed] = predicted
    frame = pseudo_label_frame(table, positions, rows, probabilities, str(Path(teacher).resolve()))
    write_dataframe_csv(out, frame, index=False)
    return frame
