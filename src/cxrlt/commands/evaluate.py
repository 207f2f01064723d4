"""`cxrlt evaluate`: score a prediction table against labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrlt.commands._groups import (
    add_bootstrap_arguments,
    add_evaluation_arguments,
    add_group_arguments,
    add_threshold_method_arguments,
    evaluation_options,
    scoring_options,
)
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
of the schema of a run's metrics.json: `split` (--split, else null),
`n_images`, `per_class`, `mean` and `groups` (head / medium / tail) sections. Missing
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

With --subgroups sex,age,view (and source) every subgroup is scored too
(`subgroups` -> attribute -> group -> n_images, auc, map, f1 and per class
auc / ap / f1 / tpr, null when undefined; with --bootstrap, patient
intervals), and `subgroup_summary` holds per attribute the true-positive-rate
gap between subgroups at the thresholds (tuned ones with --val-predictions)
and the worst subgroup per class. Columns come from --metadata (default: the
label file): sex / Patient Sex, age / Patient Age, view / View Position,
source. With --aggregate study the images of a study are merged
(--study-merge max / mean / logit_mean; labels: their union) and studies are
scored; images without a study id are left out and counted. --protocol
scores a CXR-LT task (docs/evaluation.md).

The id column is found by name when --id-column is not given: the first of
image_id, dicom_id, Image Index, path, id (case-insensitive) in each file.
"""
EXAMPLE = """
cxrlt evaluate runs/demo --split test
cxrlt evaluate runs/demo --subgroups sex,age --aggregate study
cxrlt evaluate --predictions P.csv --labels L.csv --subgroups sex,age,view --json OUT.json
cxrlt evaluate --predictions runs/nih/test_predictions.csv --labels data/nih_test_labels.csv \\
    --groups-from data/nih_train_labels.csv --json runs/nih/test_metrics.json --plots runs/nih/plots
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt evaluate`."""
    parser.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run folder made by `cxrlt train`")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="run folder mode: the split to evaluate (default: test); prediction table mode: the "
                             "split the predictions are of, recorded in the report")
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
    add_evaluation_arguments(parser)
    tuning = parser.add_argument_group("F1 at tuned thresholds")
    tuning.add_argument("--val-predictions", metavar="V.csv", type=Path, help="validation prediction table")
    tuning.add_argument("--val-labels", metavar="VL.csv", type=Path, help="validation labels")
    add_threshold_method_arguments(tuning)
    parser.add_argument("--threshold", type=float, default=0.5, metavar="T", help="fixed decision threshold for F1 (default: 0.5)")
    parser.add_argument("--plots", metavar="DIR", type=Path,
                        help="also save roc.png, pr.png, per_class.png and reliability.png here "
                             "(and subgroups.png with subgroups)")
    uncertainty = parser.add_argument_group("uncertainty and calibration")
    add_bootstrap_arguments(uncertainty)
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
    from cxrlt.io import check_output
    from cxrlt.runs.finish import evaluate_run

    if args.metadata is not None or args.study_column is not None:
        raise ConfigError("a run folder's metadata and study ids are its label files' (sex, age, view, source, "
                          "study_id): --metadata and --study-column are for prediction tables")
    if args.plots is not None:
        check_output(args.plots, "--plots", folder=True)
    evaluation = {}
    options = evaluation_options(args)
    if options["subgroups"] is not None:
        settings = options["subgroups"]
        evaluation.update(subgroups=list(settings.attributes), age_bands=list(settings.age_edges),
                          min_subgroup=settings.min_images)
    if options["aggregate"] is not None:
        evaluation.update(aggregate="study", study_merge=options["aggregate"])
    if options["protocol"] is not None:
        evaluation["protocol"] = options["protocol"]
    if args.bootstrap:
        evaluation["bootstrap"] = args.bootstrap
    scores = evaluate_run(args.run_dir, args.split or "test", progress=not args.no_progress, evaluation=evaluation)
    if args.plots is not None:
        scores.write_plots(args.plots)
    print(scores.table)
    for line in scores.summary_lines():
        print(line)
    for message in scores.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def _evaluate_prediction_file(args: argparse.Namespace) -> int:
    from cxrlt.evaluation.predictions import read_label_csv, read_predictions
    from cxrlt.evaluation.tables import read_validation, score_table
    from cxrlt.io import check_output, write_json

    inputs = [args.predictions, args.labels, args.val_predictions, args.val_labels, args.groups_from]
    check_output(args.json, "--json", inputs=inputs)
    if args.plots is not None:
        check_output(args.plots, "--plots", folder=True)
    if (args.val_predictions is None) != (args.val_labels is None):
        raise ConfigError("--val-predictions and --val-labels go together: give both to tune thresholds, or neither")
    if not 0 <= args.threshold <= 1:
        raise ConfigError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if args.temperature and args.val_predictions is None:
        raise ConfigError("--temperature is fitted on validation: give --val-predictions and --val-labels too")
    options = scoring_options(args, threshold=args.threshold)

    predictions = read_predictions(args.predictions, args.id_column)
    labels = read_label_csv(args.labels, args.id_column, predictions.classes, args.allow_missing_classes)
    validation = None
    if args.val_predictions is not None:
        validation = read_validation(args.val_predictions, args.val_labels, args.id_column, args.allow_missing_classes)
    scored = score_table(predictions, labels, options, split=args.split, validation=validation,
                         temperature=args.temperature, group_sources=[args.predictions], progress=not args.no_progress)
    scores = scored.scores
    write_json(args.json, scores.metrics)
    plots = scores.write_plots(args.plots) if args.plots is not None else []

    for message in scored.warnings:
        print(f"cxrlt evaluate: warning: {message}", file=sys.stderr)
    unit = "studies" if "aggregate" in scores.metrics else "images"
    print(f"{scores.metrics['n_images']} {unit}, {len(scores.result.classes)} classes; " + "; ".join(scored.notes))
    print(scores.table)
    for line in scores.summary_lines():
        print(line)
    print(f"wrote {args.json}" + (f" and {', '.join(str(p) for p in plots)}" if plots else ""))
    return 0
