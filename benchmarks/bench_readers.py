"""How fast each label reader turns a large file into a label table.

Real files from ../shared/data when present (NIH Data_Entry_2017_v2020,
112,120 rows, with the official lists; CheXpert train.csv, 223,414 rows),
plus generated 200,000-row MIMIC / CXR-LT and generic CSV files (26 classes,
blank and -1 values, like CXR-LT 2023). Each reader is timed end to end
(read, validate, map labels, build the table), best of --repeats, and its
rows per second printed.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_readers.py [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def generated_files(folder: Path, rows: int, seed: int = 0) -> dict[str, tuple[str, dict]]:
    """A MIMIC-style and a generic CSV of `rows` rows with the CXR-LT 2023 classes."""
    from cxrlt.labels import CXRLT2023

    rng = np.random.default_rng(seed)
    classes = list(CXRLT2023)
    frequency = np.geomspace(0.3, 0.001, len(classes))
    values = (rng.random((rows, len(classes))) < frequency).astype(np.float64)
    values[rng.random(values.shape) < 0.05] = -1.0
    values[rng.random(values.shape) < 0.2] = np.nan
    subjects = 10_000_000 + rng.integers(0, rows // 3, rows)
    studies = 50_000_000 + np.arange(rows) // 2
    mimic = pd.DataFrame({"dicom_id": [f"d{i:08x}" for i in range(rows)], "subject_id": subjects,
                          "study_id": studies, "ViewPosition": rng.choice(["PA", "AP", "LATERAL"], rows),
                          "split": rng.choice(["train", "validate", "test"], rows, p=[0.8, 0.05, 0.15])})
    mimic[classes] = values
    mimic.to_csv(folder / "mimic.csv", index=False)
    generic = pd.DataFrame({"path": [f"images/{i:06d}.png" for i in range(rows)], "patient": subjects})
    generic[classes] = np.nan_to_num(np.clip(values, 0, 1))
    generic.to_csv(folder / "generic.csv", index=False)
    return {
        f"mimic (generated, {rows:,} rows)": ("mimic", {"labels": folder / "mimic.csv"}),
        f"csv (generated, {rows:,} rows)": ("csv", {"labels": folder / "generic.csv", "patient_column": "patient"}),
    }


def real_files() -> dict[str, tuple[str, dict]]:
    """The real label files of ../shared/data that are present."""
    files: dict[str, tuple[str, dict]] = {}
    nih = SHARED / "nih"
    if (nih / "Data_Entry_2017_v2020.csv.gz").is_file():
        files["nih (real, 112,120 rows, gzipped, official lists)"] = ("nih", {
            "labels": nih / "Data_Entry_2017_v2020.csv.gz", "train_list": nih / "train_val_list.txt",
            "test_list": nih / "test_list.txt"})
    chexpert = SHARED / "chexpert" / "chexpert_train.csv.gz"
    if chexpert.is_file():
        files["chexpert (real train.csv, gzipped, U-Ignore)"] = ("chexpert", {"labels": chexpert, "uncertain": "ignore"})
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the generated files")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from cxrlt.registry import SOURCES

    with tempfile.TemporaryDirectory() as tmp:
        cases = {**real_files(), **generated_files(Path(tmp), args.rows)}
        print(f"{'reader':56} {'rows':>9} {'classes':>7} {'best s':>7} {'rows/s':>10}")
        for title, (name, params) in cases.items():
            best, table = float("inf"), None
            for _ in range(args.repeats):
                start = time.perf_counter()
                table = SOURCES.build(name, **params)
                best = min(best, time.perf_counter() - start)
            print(f"{title:56} {len(table):>9,} {len(table.classes):>7} {best:>7.2f} {len(table) / best:>10,.0f}")


if __name__ == "__main__":
    main()
