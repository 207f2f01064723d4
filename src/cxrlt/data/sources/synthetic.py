"""The `synthetic` source: the bundled long-tailed synthetic chest X-rays.

The dataset is generated on first use (deterministic from its parameters)
into `out`, by default a folder of the user cache named after the
parameters, and read back like any generic CSV dataset.
"""

from __future__ import annotations

from pathlib import Path

from cxrlt.data.sources.csv_table import csv_table
from cxrlt.data.synthetic import generate_dataset
from cxrlt.data.synthetic.label_model import DEFAULT_MIN_FREQUENCY
from cxrlt.data.table import LabelTable
from cxrlt.io import user_cache_dir
from cxrlt.labels import NIH14
from cxrlt.registry import SOURCES


@SOURCES.register("synthetic")
def synthetic(
    out: Path | None = None,
    n_images: int = 5000,
    image_size: int = 128,
    seed: int = 0,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
    workers: int = 1,
) -> LabelTable:
    """Synthetic NIH-14 chest films; generated into `out` unless already there."""
    folder = Path(out) if out is not None else default_folder(n_images, image_size, seed, min_frequency)
    generate_dataset(folder, n_images=n_images, image_size=image_size, seed=seed, min_frequency=min_frequency,
                     workers=workers)
    table = csv_table(labels=folder / "labels.csv", images=folder, id_column="image_id",
                      patient_column="patient_id", view_column="view", classes=list(NIH14))
    table.meta["source"] = "synthetic"
    return table


def default_folder(n_images: int, image_size: int, seed: int, min_frequency: float) -> Path:
    """The cache folder of one parameter set."""
    return user_cache_dir() / "synthetic" / f"n{n_images}-px{image_size}-seed{seed}-min{min_frequency:g}"
