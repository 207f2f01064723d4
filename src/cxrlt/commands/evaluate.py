"""`cxrlt evaluate`: score a prediction table against labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrlt.commands._groups import add_group_arguments, resolve_groups
from cxrlt.errors import ConfigError

HELP = "score a run or a prediction table: per-class AUC, AP, F1 and head/medium/tail means"
DESCRIPTION = """
Run folder mode (cxrlt evaluate RUN_DIR [--split test]): predicts the split
with the run's saved model, writes its predictions and metrics into the run
folder and prints the per-class table.

Prediction table mode: reads a prediction table (an id column and one probability column per class)
and a label file (the same id column and one 0 / 1 / blank column per class;
other columns are ignored, but a label column of a class the predictions lack
is an error unless --allow-missing-classes), matches them by image id, and writes a JSON report
with `per_class`, `mean` and `groups` (head / medium / tail) sections. Missing
labels are left out per class; a class without a positive or a negative has
no AUC / AP (null in the JSON) and is left out of the means.

Head / medium / tail groups come from training positives: those of
--groups-from (a training label file, or a run folder / model.json), else
those saved with the run the predictions belong to (its model.json beside
them); only when neither exists from the evaluated labels, which the output
says. Group sizes default to the label space's (CXR-LT 2023: 9 / 8 / 9). With --val-predictions and --val-labels, a
per-class threshold is tuned on validation and F1 is reported at it too, and
--temperature fits one temperature T on validation (p -> sigmoid(logit(p)/T),
minimising the binary cross-entropy) and reports the calibration after it.

Every report has a `calibration` section: expected calibration error (15
equal-width bins) per class, pooled over all (image, class) pairs and
averaged over classes. With --bootstrap N, percentile confidence intervals
(--level, default 95%) of every per-class and mean AUC / AP come from N
resamples of the images, or of patients when --patients names the label
file's patient id column (images of one patient are resampled together).

The id column is found by name when --id-column is not given: the first of
image_id, dicom_id, Image Index, path, id (case-insensitive) in each file.
"""
EXAMPLE = """
cxrlt evaluate runs/demo --split test
cxrlt evaluate --predictions runs/nih/test_predictions.csv --labels data/nih_test_labels.csv \\
    --groups-from data/nih_train_labels.csv --json runs/nih/test_metrics.json --plots runs/nih/plots
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt evaluate`."""
    parser.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run folder made by `cxrlt train`")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="run folder mode: the split to evaluate (default: test)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    files = parser.add_argument_group("prediction table mode")
    files.add_argument("--predictions", metavar="P.csv", type=Path, help="prediction table (id + one probability column per class)")
    files.add_argument("--labels", metavar="L.csv", type=Path, help="labels of the same images (id + 0/1/blank per class)")
    parser.add_argument("--json", metavar="OUT.json", type=Path, help="where to write the metrics report (required)")
    parser.add_argument("--id-column", metavar="C", help="id column of the CSV files (default: found by name)")
    parser.add_argument("--allow-missing-classes", action="store_true",
                        help="score only the predicted classes when the label file has more (default: an error "
                        "naming the classes the predictions lack)")
    add_group_arguments(parser)
    tuning = parser.add_argument_group("F1 at tuned thresholds")
    tuning.add_argument("--val-predictions", metavar="V.csv", type=Path, help="validation prediction table")
    tuning.add_argument("--val-labels", metavar="VL.csv", type=Path, help="validation labels")
    tuning.add_argument("--threshold-method", choices=("max_f1", "sensitivity"), default="max_f1",
                        help="max_f1: maximise validation F1; sensitivity: highest threshold reaching --target-sensitivity")
    tuning.add_argument("--target-sensitivity", type=float, default=0.9, metavar="S",
                        help="for --threshold-method sensitivity (default: 0.9)")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="T", help="fixed decision threshold for F1 (default: 0.5)")
    parser.add_argument("--plots", metavar="DIR", type=Path,
                        help="also save roc.png, pr.png, per_class.png and reliability.png here")
    uncertainty = parser.add_argument_group("uncertainty and calibration")
    uncertainty.add_argument("--bootstrap", type=int, default=0, metavar="N",
                             help="bootstrap resamples for confidence intervals (default: 0, none; 1000 is usual)")
    uncertainty.add_argument("--patients", metavar="COL",
                             help="patient id column of the label file: resample patients, not images")
    uncertainty.add_argument("--level", type=float, default=0.95, help="interval level (default: 0.95)")
    uncertainty.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    uncertainty.add_argument("--temperature", action="store_true",
                             help="fit a temperature on --val-predictions / --val-labels and report calibration after it")


def run(args: argparse.Namespace) -> int:
    """Score a run folder, or the prediction table given on the command line."""
    if args.run_dir is not None:
        if args.predictions or args.labels:
            raise ConfigError("give either RUN_DIR or --predictions/--labels, not both")
        return _evaluate_run_dir(args)
    missing = [flag for flag, value in (("--predictions", args.predictions), ("--labels", args.labels), ("--json", args.json)) if value is None]
    if missing:
        raise ConfigError(
            f"cxrlt evaluate needs {', '.join(missing)}: give --predictions P.csv --labels L.csv --json OUT.json "
            "(see `cxrlt evaluate --help`)"
        )
    return _evaluate_prediction_file(args)


def _evaluate_run_dir(args: argparse.Namespace) -> int:
    from cxrlt.runs.finish import evaluate_run

    metrics = evaluate_run(args.run_dir, args.split, progress=not args.no_progress)
    print(metrics.table)
    for message in metrics.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def _evaluate_prediction_file(args: argparse.Namespace) -> int:
    import warnings

    from cxrlt.evaluation.metrics import compute_metrics, tune_thresholds
    from cxrlt.evaluation.predictions import align, read_label_csv, read_predictions
    from cxrlt.io import check_output, write_json

    inputs = [args.predictions, args.labels, args.val_predictions, args.val_labels, args.groups_from]
    check_output(args.json, "--json", inputs=inputs)
    if args.plots is not None:
        check_output(args.plots, "--plots", folder=True)
    if (args.val_predictions is None) != (args.val_labels is None):
        raise ConfigError("--val-predictions and --val-labels go together: give both to tune thresholds, or neither")
    if not 0 <= args.threshold <= 1:
        raise ConfigError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if not 0 < args.target_sensitivity <= 1:
        raise ConfigError(f"--target-sensitivity must lie in (0, 1], got {args.target_sensitivity}")
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be 0 (no intervals) or a number of resamples, got {args.bootstrap}")
    if not 0 < args.level < 1:
        raise ConfigError(f"--level must lie in (0, 1), e.g. 0.95; got {args.level}")
    if args.temperature and args.val_predictions is None:
        raise ConfigError("--temperature is fitted on validation: give --val-predictions and --val-labels too")
    if args.patients is not None and args.bootstrap == 0:
        raise ConfigError("--patients only chooses what the bootstrap resamples: give --bootstrap N too")

    predictions = read_predictions(args.predictions, args.id_column)
    data = align(predictions, read_label_csv(args.labels, args.id_column, predictions.classes,
                                             args.allow_missing_classes))
    classes = list(data.classes)

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thresholds = None
        temperature = None
        if args.val_predictions is not None:
            val_pred = read_predictions(args.val_predictions, args.id_column)
            val = align(val_pred, read_label_csv(args.val_labels, args.id_column, val_pred.classes,
                                                 args.allow_missing_classes))
            columns = _reorder(val.classes, classes, f"{args.val_predictions} and {args.predictions}")
            thresholds = tune_thresholds(
                val.labels[:, columns], val.probs[:, columns], args.threshold_method, args.target_sensitivity,
                fallback=args.threshold, classes=classes,
            )
            notes.append(f"thresholds tuned on {args.val_predictions} ({args.threshold_method})")
            if args.temperature:
                from cxrlt.evaluation.calibration import fit_temperature

                temperature = fit_temperature(val.labels, val.probs)
                notes.append(f"temperature T = {temperature:.4g} fitted on {args.val_predictions}")
        result = compute_metrics(data.labels, data.probs, classes, thresholds=thresholds, threshold=args.threshold)

    groups, train_positives, note = resolve_groups(args, classes, [args.predictions], result.positives)
    notes.append(note)

    from cxrlt.evaluation.calibration import calibration_summary, write_reliability_plot

    report = result.to_dict(groups)
    if args.bootstrap:
        from cxrlt.evaluation.bootstrap import bootstrap_metrics
        from cxrlt.evaluation.predictions import read_patients

        patients = None
        if args.patients is not None:
            patients = read_patients(args.labels, data.ids, args.patients, args.id_column)
        report["intervals"] = bootstrap_metrics(
            data.labels, data.probs, classes, resamples=args.bootstrap, patients=patients, level=args.level,
            seed=args.seed, progress=not args.no_progress,
        ).to_dict(groups)
    report["calibration"] = calibration_summary(data.labels, data.probs, classes, temperature=temperature)
    if thresholds is not None:
        from cxrlt.evaluation.calibration import operating_points

        report["thresholds"] = {
            "method": args.threshold_method, "tuned_on": str(args.val_predictions),
            **({"target_sensitivity": args.target_sensitivity} if args.threshold_method == "sensitivity" else {}),
            "per_class": operating_points(data.labels, data.probs, thresholds, classes),
        }
    write_json(args.json, report)
    plots = []
    if args.plots is not None:
        from cxrlt.evaluation.plots import write_plots

        plots = write_plots(args.plots, data.labels, data.probs, result, groups, train_positives)
        plots.append(write_reliability_plot(args.plots / "reliability.png", data.labels, data.probs, groups,
                                            temperature=temperature))

    for warning in caught:
        print(f"cxrlt evaluate: warning: {warning.message}", file=sys.stderr)
    print(f"{len(data.ids)} images, {len(classes)} classes; " + "; ".join(notes))
    print(result.format_table(groups, train_positives))
    for line in summary_lines(report):
        print(line)
    print(f"wrote {args.json}" + (f" and {', '.join(str(p) for p in plots)}" if plots else ""))
    return 0


def _reorder(source: tuple[str, ...], target: list[str], where: str) -> list[int]:
    """Column indices putting `source` classes in `target` order."""
    from cxrlt.errors import InputError
    from cxrlt.labels import canonical_key

    index = {canonical_key(c): j for j, c in enumerate(source)}
    missing = [c for c in target if canonical_key(c) not in index]
    extra = len(source) - (len(target) - len(missing))
    if missing or extra:
        raise InputError(
            f"the validation and test prediction tables ({where}) must have the same classes; "
            f"validation lacks {missing or 'none'} and has {extra} class(es) the test table lacks"
        )
    return [index[canonical_key(c)] for c in target]


def summary_lines(report: dict) -> list[str]:
    """Interval and calibration lines printed under the metrics table."""
    lines = []
    intervals = report.get("intervals")
    if intervals:
        def span(pair):
            return "n/a" if pair is None else f"[{pair[0]:.4f}, {pair[1]:.4f}]"

        lines.append(f"{intervals['level']:.0%} bootstrap intervals ({intervals['resamples']} resamples of "
                     f"{intervals['unit']}s): mean AUC {span(intervals['mean']['auc'])}, "
                     f"mAP {span(intervals['mean']['ap'])}")
        for name, group in intervals.get("groups", {}).items():
            lines.append(f"  {name}: AUC {span(group['auc'])}, AP {span(group['ap'])}")
    calibration = report["calibration"]

    def value(v):
        return "n/a" if v is None else f"{v:.4f}"

    line = (f"calibration: pooled ECE {value(calibration['pooled_ece'])}, "
            f"mean per-class ECE {value(calibration['mean_ece'])}")
    if calibration["temperature"] is not None:
        scaled = calibration["scaled"]
        line += (f"; at T = {calibration['temperature']:.4g}: pooled {value(scaled['pooled_ece'])}, "
                 f"mean {value(scaled['mean_ece'])}")
    lines.append(line)
    return lines
