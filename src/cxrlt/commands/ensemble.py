"""`cxrlt ensemble`: combine the prediction tables of several models."""

from __future__ import annotations

import argparse
from pathlib import Path

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
--labels-val, or from the first folder member's configuration. With --labels,
the ensemble and every member are scored on the test labels.
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


def _folder_tables(folder: Path) -> tuple[Path, Path]:
    """(test, validation) prediction files of a run or k-fold folder."""
    from cxrlt.errors import InputError
    from cxrlt.layout import KFoldFiles, RunFiles

    kfold, run = KFoldFiles(folder), RunFiles(folder)
    if kfold.state.is_file():
        test, val = kfold.predictions, kfold.oof_predictions
    elif run.config.is_file():
        from cxrlt.runs.folder import RunFolder

        headline = RunFolder(folder).load_config().evaluation.split
        test, val = run.predictions("test", headline), run.predictions("val", headline)
    else:
        raise InputError(f"neither a run folder ({run.CONFIG}) nor a k-fold folder ({kfold.STATE})", folder)
    if not test.is_file():
        raise InputError(f"has no test predictions ({test.name}); run `cxrlt evaluate {folder} --split test` first",
                         folder)
    return test, val


def _folder_val_labels(folder: Path):
    """Validation labels of a run folder (its val split) or k-fold folder (its out-of-fold rows)."""
    from cxrlt.evaluation.predictions import ClassTable
    from cxrlt.layout import KFoldFiles

    if KFoldFiles(folder).state.is_file():
        from cxrlt.runs.kfold import oof_labels

        return oof_labels(folder)
    from cxrlt.training.data import load_run_data
    from cxrlt.runs.folder import RunFolder

    part = load_run_data(RunFolder(folder).load_config()).part("val")
    return ClassTable(part.meta["image_id"].astype(str).to_numpy(dtype=object), tuple(part.classes), part.labels,
                      folder / "config.yaml")


def run(args: argparse.Namespace) -> int:
    """Read the members, combine them, write the table and print what was done."""
    import warnings

    from cxrlt.ensemble.combine import classwise_ensemble, classwise_selection, mean_ensemble
    from cxrlt.errors import ConfigError, InputError
    from cxrlt.evaluation.metrics import UndefinedMetricWarning, compute_metrics
    from cxrlt.evaluation.predictions import align, read_label_csv, read_predictions, write_predictions
    from cxrlt.io import check_output, write_json

    if len(args.members) < 2:
        raise ConfigError("an ensemble needs two or more members")
    inputs = [*args.members, *(args.val or []), args.labels, args.labels_val]
    check_output(args.out, "--out", inputs=inputs)
    selection_file = args.out.with_name(args.out.stem + "_selection.json")
    if args.method == "classwise":
        check_output(selection_file, "--out (its selection file)", inputs=inputs)
    folders = [m for m in args.members if m.is_dir()]
    files = [m for m in args.members if not m.is_dir()]
    names = [str(m) for m in args.members]
    tests, vals = [], []
    csv_vals = iter(args.val or [])
    if args.val is not None and len(args.val) != len(files):
        raise ConfigError(f"--val gives {len(args.val)} tables for {len(files)} CSV member(s); give one per CSV member")
    for member in args.members:
        if member.is_dir():
            test, val = _folder_tables(member)
        else:
            test, val = member, next(csv_vals, None)
        tests.append(read_predictions(test, args.id_column))
        vals.append(val)

    if args.method == "classwise":
        if any(v is None for v in vals):
            raise ConfigError("--method classwise needs a validation table per member: give --val for the CSV members")
        missing = [str(v) for v in vals if not Path(v).is_file()]
        if missing:
            raise InputError(f"validation predictions not found: {', '.join(missing)}")
        if args.labels_val is not None:
            labels_val = read_label_csv(args.labels_val, args.id_column)
        elif folders:
            labels_val = _folder_val_labels(folders[0])
        else:
            raise ConfigError("--method classwise needs validation labels: give --labels-val")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UndefinedMetricWarning)
            selection = classwise_selection([read_predictions(v, args.id_column) for v in vals], labels_val,
                                            args.top_k, args.metric, names)
        for warning in caught:
            print(f"warning: {warning.message}")
        result = classwise_ensemble(tests, selection, args.merge)
        print(selection.format_table())
        write_json(selection_file, selection.to_dict())
        print(f"\nselection written to {selection_file}")
    else:
        result = mean_ensemble(tests, "geometric" if args.method == "geometric" else "arithmetic")
    write_predictions(args.out, result.ids, result.classes, result.values)
    print(f"wrote {len(result.ids)} rows x {len(result.classes)} classes to {args.out} "
          f"({args.method} of {len(tests)} members)")

    if args.labels is not None:
        labels = read_label_csv(args.labels, args.id_column)
        print(f"\ntest scores ({args.labels}): mean AUC, mean AP")
        width = max(len(n) for n in [*names, "ensemble"])
        for name, table in [*zip(names, tests), ("ensemble", result)]:
            aligned = align(table, labels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                summary = compute_metrics(aligned.labels, aligned.probs, aligned.classes).summary()
            means = [summary["mean"][key] for key in ("auc", "ap")]
            print(f"{name:<{width}}  " + "  ".join("n/a" if v is None else f"{v:.4f}" for v in means))
    return 0
