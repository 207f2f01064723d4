"""`cxrlt compare`: paired bootstrap comparison of two prediction tables."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cxrlt.commands._groups import add_group_arguments, resolve_groups
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
    tuning.add_argument("--threshold-method", choices=("max_f1", "sensitivity"), default="max_f1",
                        help="max_f1: maximise validation F1; sensitivity: highest threshold reaching "
                             "--target-sensitivity")
    tuning.add_argument("--target-sensitivity", type=float, default=0.9, metavar="S",
                        help="for --threshold-method sensitivity (default: 0.9)")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="write comparison.json, comparison.csv and comparison.png here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Compare A and B and print (and optionally write) the differences."""
    import numpy as np

    from cxrlt.evaluation.bootstrap import paired_bootstrap
    from cxrlt.evaluation.predictions import read_patients
    from cxrlt.evaluation.predictions import align, match_tables, read_label_csv, read_predictions
    from cxrlt.io import check_output
    from cxrlt.evaluation.saved import pair_thresholds

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
    a = read_predictions(args.a, args.id_column)
    b = read_predictions(args.b, args.id_column)
    rows, columns = match_tables(a, b, "a paired comparison needs predictions of the same images and classes")
    data = align(a, read_label_csv(args.labels, args.id_column, a.classes, args.allow_missing_classes))
    classes = list(data.classes)
    probs_b = b.values[rows][:, columns]
    patients = read_patients(args.labels, data.ids, args.patients, args.id_column) if args.patients else None
    positives = np.sum(data.labels == 1, axis=0)
    groups, _, source = resolve_groups(args, classes, [args.a, args.b], positives)
    thresholds, threshold_note = pair_thresholds((args.a, args.b), classes, args.val_predictions, args.val_labels,
                                                 args.id_column, args.threshold_method, args.target_sensitivity)
    result = paired_bootstrap(data.labels, data.probs, probs_b, classes, resamples=args.resamples,
                              patients=patients, level=args.level, seed=args.seed,
                              progress=not args.no_progress, thresholds=thresholds)
    report = {"a": str(args.a), "b": str(args.b), "labels": str(args.labels), "n_images": len(data.ids),
              **result.to_dict(groups)}
    if thresholds is not None:
        report["thresholds"] = {"a": [float(v) for v in thresholds[0]], "b": [float(v) for v in thresholds[1]],
                                "tuned_on": threshold_note}
    print(f"A = {args.a}\nB = {args.b}\n{len(data.ids)} images, {len(classes)} classes; {source}; {threshold_note}")
    print(format_comparison(report, groups, positives))
    if args.out is not None:
        written = write_comparison(args.out, report, groups, positives)
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _metrics(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, column label) of the metrics the report compares."""
    names = {"auc": "AUC", "ap": "AP", "f1_tuned": "F1@tuned"}
    return [(key, names[key]) for key in names if key in report["mean"]]


def _span(entry: dict[str, Any]) -> str:
    if entry["difference"] is None:
        return "n/a"
    lo, hi = entry["interval"] if entry["interval"] is not None else (float("nan"),) * 2
    return f"{entry['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _value(v: float | None, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def _share(v: float | None) -> str:
    # never print a rounded 100% or 0% for a share that is not exactly that
    if v is None:
        return "n/a"
    if 0.999 < v < 1:
        return ">99.9%"
    if 0 < v < 0.001:
        return "<0.1%"
    return f"{v:.1%}"


def format_comparison(report: dict[str, Any], groups: list[str], positives: Any) -> str:
    """A plain-text table of per-class and mean values of A and B with the differences."""
    level = f"{report['level']:.0%}"
    metrics = _metrics(report)
    header = ["class", "group", "pos"]
    for _, label in metrics:
        header += [f"{label} A", f"{label} B", f"{label} A-B [{level}]", "A>B"]

    def cells(name: str, group: str, count: str, entry: dict[str, Any]) -> list[str]:
        row = [name, group, count]
        for metric, _ in metrics:
            e = entry[metric]
            row += [_value(e["a"]), _value(e["b"]), _span(e), _share(e["share_a_better"])]
        return row

    rows = [cells(name, groups[j], str(int(positives[j])), entry)
            for j, (name, entry) in enumerate(report["per_class"].items())]
    summary = [cells(f"mean ({report['mean']['classes']})", "", "", report["mean"])]
    summary += [cells(f"{name} ({entry['classes']})", "", "", entry)
                for name, entry in report.get("groups", {}).items()]
    widths = [max(len(r[i]) for r in [header, *rows, *summary]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule, *map(line, rows), rule, *map(line, summary)]
    out.append(f"A>B: share of the {report['resamples']} paired resamples (of {report['unit']}s) in which A scores "
               f"higher; intervals are percentile intervals of A - B")
    return "\n".join(out)


def write_comparison(directory: Path, report: dict[str, Any], groups: list[str], positives: Any) -> list[Path]:
    """comparison.json, comparison.csv and comparison.png in `directory` (atomic)."""
    import pandas as pd

    from cxrlt.io import save_figure, write_dataframe_csv, write_json

    records = []
    entries = [(name, "class", groups[j], int(positives[j]), entry)
               for j, (name, entry) in enumerate(report["per_class"].items())]
    entries.append(("mean", "mean", "", None, report["mean"]))
    entries += [(name, "group", name, None, entry) for name, entry in report.get("groups", {}).items()]
    for name, kind, group, count, entry in entries:
        record: dict[str, Any] = {"name": name, "kind": kind, "group": group, "positives": count}
        for metric, _ in _metrics(report):
            e = entry[metric]
            interval = e["interval"] or [None, None]
            record.update({f"{metric}_a": e["a"], f"{metric}_b": e["b"], f"{metric}_difference": e["difference"],
                           f"{metric}_low": interval[0], f"{metric}_high": interval[1],
                           f"{metric}_share_a_better": e["share_a_better"]})
        records.append(record)
    directory = Path(directory)
    return [
        write_json(directory / "comparison.json", report),
        write_dataframe_csv(directory / "comparison.csv", pd.DataFrame.from_records(records)),
        save_figure(directory / "comparison.png", comparison_figure(report, groups, positives)),
    ]


def comparison_figure(report: dict[str, Any], groups: list[str], positives: Any) -> Any:
    """Forest plot: per-class and mean differences A - B with intervals, AUC and AP side by side."""
    import numpy as np
    from matplotlib.figure import Figure

    from cxrlt.evaluation.plots import GROUP_COLOURS

    names = list(report["per_class"])
    order = np.argsort(-np.asarray(positives, dtype=float), kind="stable")
    labels = [f"{names[j]} ({int(positives[j])})" for j in order]
    entries = [report["per_class"][names[j]] for j in order]
    colours = [GROUP_COLOURS.get(groups[j], "#333333") for j in order]
    labels += ["mean"] + [f"{g} mean" for g in report.get("groups", {})]
    entries += [report["mean"], *report.get("groups", {}).values()]
    colours += ["#000000"] + [GROUP_COLOURS.get(g, "#333333") for g in report.get("groups", {})]
    n = len(labels)
    metrics = _metrics(report)
    fig = Figure(figsize=(4.5 * len(metrics), 1.4 + 0.26 * n), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True)
    y = np.arange(n, dtype=float)
    y[len(names):] += 0.8  # a gap before the means
    for ax, (metric, label) in zip(axes, metrics):
        title = f"{label} difference A - B"
        ax.axvline(0, color="#999999", lw=0.9)
        for yi, entry, colour in zip(y, entries, colours):
            e = entry[metric]
            if e["difference"] is None:
                ax.text(0, yi, "n/a", ha="center", va="center", fontsize=7, color="#777777")
                continue
            if e["interval"] is not None:
                ax.plot(e["interval"], [yi, yi], color=colour, lw=1.6)
            ax.plot([e["difference"]], [yi], marker="D" if yi > len(names) else "o", ms=4.5, color=colour)
        ax.set_xlabel(f"{title} ({report['level']:.0%} paired bootstrap interval)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, labels)
    axes[0].set_ylim(y[-1] + 0.7, -0.7)
    fig.suptitle(f"A = {Path(report['a']).name} vs B = {Path(report['b']).name} "
                 f"({report['resamples']} resamples of {report['unit']}s)", fontsize=10)
    return fig
