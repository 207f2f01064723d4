"""`cxrlt ensemble`: combine the prediction tables of several models."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrlt.commands._groups import (
    add_bootstrap_arguments,
    add_group_arguments,
    add_threshold_method_arguments,
    scoring_options,
)

HELP = "combine several models' prediction tables: model-wise mean or class-wise selection"
DESCRIPTION = """
Each MEMBER is one model's predictions, given as
  - a run folder (`cxrlt train`): its test predictions, and its validation
    predictions for class-wise selection;
  - a k-fold folder (`cxrlt kfold`): its averaged test predictions, and its
    out-of-fold predictions as validation;
  - a prediction CSV (image_id + one probability column per class); for
    class-wise selection give its validation table with --val, one per CSV
    member, in the same order.
Rows are matched by image id and columns by class name; members that do not
cover the same images and classes are refused.

--method mean averages probabilities; geometric takes the sigmoid of the mean
logit (the renormalised geometric mean); classwise picks, for each class, the
--top-k members with the best validation AP (or --metric auc) for that class
and merges them (by --merge, default arithmetic). Validation labels come from
--labels-val, or from the first folder member (the labels it saved beside its
validation predictions).

With --labels (test labels), every member and the ensemble are scored: their
mean AUC and AP are printed, and the ensemble's full report, a metrics.json
like a run's (per class, means, head / medium / tail groups, calibration,
bootstrap intervals with --bootstrap N), is written beside --out as
OUT_metrics.json. Its F1 thresholds are tuned on the members' validation
predictions, ensembled the same way, when every member has them for the
same images (--threshold-method, --target-sensitivity as in `cxrlt evaluate`).
Groups are made as in `cxrlt evaluate`.
"""
EXAMPLE = """
cxrlt ensemble runs/densenet runs/convnext runs/effnet --method classwise --top-k 2 --out ensemble.csv
cxrlt ensemble a_test.csv b_test.csv --val a_val.csv b_val.csv --labels-val val_labels.csv --method classwise \\
    --top-k 1 --labels test_labels.csv --out ensemble.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt ensemble`."""
    parser.add_argument("members", nargs="+", metavar="MEMBER", type=Path,
                        help="run folder, k-fold folder or test prediction CSV (two or more)")
    parser.add_argument("--out", required=True, type=Path, help="ensemble prediction CSV to write")
    parser.add_argument("--method", choices=("mean", "geometric", "classwise"), default="mean",
                        help="mean (default), geometric (mean logit) or classwise (top-k members per class)")
    parser.add_argument("--top-k", type=int, default=1, metavar="K",
                        help="classwise: members merged per class (default: 1)")
    parser.add_argument("--metric", choices=("ap", "auc"), default="ap", help="classwise: selection score (default: ap)")
    parser.add_argument("--merge", choices=("arithmetic", "geometric"), default="arithmetic",
                        help="classwise: how the chosen members are merged (default: arithmetic)")
    parser.add_argument("--val", nargs="+", type=Path, metavar="VAL.csv",
                        help="classwise: validation tables of the CSV members, in the same order")
    parser.add_argument("--labels-val", type=Path, metavar="L.csv",
                        help="classwise: validation labels (default: from the first folder member)")
    parser.add_argument("--labels", type=Path, metavar="L.csv", help="test labels: score the ensemble and members")
    parser.add_argument("--id-column", metavar="C", help="id column of the CSV files (default: found by name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    scoring = parser.add_argument_group("scores on --labels")
    add_threshold_method_arguments(scoring)
    add_bootstrap_arguments(scoring)
    add_group_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Read the members, combine them, write the table and print what was done."""
    from cxrlt.errors import ConfigError
    from cxrlt.layout import EnsembleFiles
    from cxrlt.runs.ensemble import build_ensemble

    options = scoring_options(args)
    if args.labels is None and (options.bootstrap is not None or args.groups_from is not None):
        raise ConfigError("--bootstrap and --groups-from are for the scores on the test labels: give --labels too")
    ensembled = build_ensemble(args.members, args.out, method=args.method, val=args.val, labels_val=args.labels_val,
                               top_k=args.top_k, metric=args.metric, merge=args.merge, labels=args.labels,
                               scoring=options, progress=not args.no_progress)
    if ensembled.selection is not None:
        for message in ensembled.warnings:
            print(f"warning: {message}")
        print(ensembled.selection.format_table())
        print(f"\nselection written to {EnsembleFiles(args.out).selection}")
    table = ensembled.predictions
    print(f"wrote {len(table.ids)} rows x {len(table.classes)} classes to {args.out} "
          f"({args.method} of {len(args.members)} members)")
    if ensembled.scored is not None:
        print(f"\ntest scores ({args.labels}): mean AUC, mean AP")
        print("\n".join(ensembled.score_lines()))
        print("ensemble: " + "; ".join(ensembled.scored.notes))
        print("\n".join(ensembled.scored.scores.summary_lines()))
        print(f"metrics written to {EnsembleFiles(args.out).metrics}")
    return 0
