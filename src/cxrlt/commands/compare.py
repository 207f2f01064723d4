"""`cxrlt compare`: paired bootstrap comparison of two prediction tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrlt.commands._groups import add_group_arguments, add_threshold_method_arguments, group_options
from cxrlt.errors import ConfigError

HELP = "compare two prediction tables on the same images: AUC / AP / F1 differences with paired bootstrap intervals"
DESCRIPTION = """
Scores two prediction tables A and B (an id column and one probability column
per class, e.g. the predictions.csv of two runs) against one label file, and
reports per class and for the macro means (overall and head / medium / tail)
the AUC and AP of each, and F1 at tuned thresholds when they are known, the
difference A - B, its percentile bootstrap interval and the share of
resamples in which A scores higher than B.

Tuned thresholds: with --val-predictions VA.csv VB.csv and --val-labels,
each table's are tuned on its validation predictions (--threshold-method,
--target-sensitivity as in `cxrlt evaluate`); else, when A and B lie in run
folders, those their runs tuned on validation (model.json). Each table is
scored at its own thresholds.

The bootstrap is paired: each resample draws the images (or, with --patients,
whole patients) once and scores both tables on that draw, so the interval of
the difference accounts for A and B being tested on the same images. An
interval that excludes 0 says the difference is unlikely to be resampling
noise at that level; it says nothing about other datasets.

A and B must hold the same image ids and the same classes (in any order);
missing labels (blank) are left out per class, as in `cxrlt evaluate`.
Head / medium / tail groups are made as in `cxrlt evaluate`, with the same
options: from --groups-from (training labels, a run folder or model.json),
else the training positives saved with A's run (or B's), else the evaluated
labels; sizes default to the label space's (CXR-LT 2023: 9 / 8 / 9).

With --out DIR: comparison.json, comparison.csv (one row per class, mean and
group) and comparison.png (per-class differences with their intervals).
"""
EXAMPLE = """
cxrlt compare runs/focal/predictions.csv runs/bce/predictions.csv --labels data/test_labels.csv \\
    --patients patient_id --resamples 1000 --out runs/focal_vs_bce
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt compare`."""
    parser.add_argument("a", type=Path, metavar="A.csv", help="prediction table A")
    parser.add_argument("b", type=Path, metavar="B.csv", help="prediction table B (differences are A - B)")
    parser.add_argument("--labels", type=Path, metavar="L.csv", required=True,
                        help="labels of the same images (id + 0/1/blank per class)")
    parser.add_argument("--patients", metavar="COL", help="patient id column of the label file: resample patients")
    parser.add_argument("--resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (default: 1000)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default: 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--id-column", metavar="C", help="id column of the CSV files (default: found by name)")
    parser.add_argument("--allow-missing-classes", action="store_true",
                        help="compare on the predicted classes only when the label file has more (default: an "
                        "error naming the classes the predictions lack)")
    add_group_arguments(parser)
    tuning = parser.add_argument_group("F1 at tuned thresholds")
    tuning.add_argument("--val-predictions", nargs=2, type=Path, metavar=("VA.csv", "VB.csv"),
                        help="validation predictions of A and of B, to tune each one's thresholds on")
    tuning.add_argument("--val-labels", metavar="VL.csv", type=Path, help="labels of the validation images")
    add_threshold_method_arguments(tuning)
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="write comparison.json, comparison.csv and comparison.png here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Compare A and B and print (and optionally write) the differences."""
    from cxrlt.evaluation.comparison import compare_tables
    from cxrlt.io import check_output

    if args.out is not None:
        check_output(args.out, "--out", folder=True)
    if args.resamples < 1:
        raise ConfigError(f"--resamples must be at least 1 (1000 is usual), got {args.resamples}")
    if not 0 < args.level < 1:
        raise ConfigError(f"--level must lie in (0, 1), e.g. 0.95; got {args.level}")
    if (args.val_predictions is None) != (args.val_labels is None):
        raise ConfigError("--val-predictions VA.csv VB.csv and --val-labels VL.csv go together: give both to tune "
                          "thresholds, or neither")
    if not 0 < args.target_sensitivity <= 1:
        raise ConfigError(f"--target-sensitivity must lie in (0, 1], got {args.target_sensitivity}")
    comparison = compare_tables(
        args.a, args.b, args.labels, resamples=args.resamples, level=args.level, seed=args.seed,
        patients=args.patients, id_column=args.id_column, allow_missing_classes=args.allow_missing_classes,
        grouping=group_options(args), val_predictions=args.val_predictions, val_labels=args.val_labels,
        threshold_method=args.threshold_method, target_sensitivity=args.target_sensitivity,
        progress=not args.no_progress)
    print(f"A = {args.a}\nB = {args.b}\n{comparison.report['n_images']} images, {len(comparison.groups)} classes; "
          + "; ".join(comparison.notes))
    print(comparison.format())
    if args.out is not None:
        print("wrote " + ", ".join(str(p) for p in comparison.write(args.out)))
    return 0
