"""Paired comparison of two prediction tables on the same images: what `cxrlt compare` reports.

Both tables are scored against one label file at each one's thresholds
(tuned on validation predictions, or those their runs saved), and
`cxrlt.evaluation.bootstrap.paired_bootstrap` draws the images (or whole
patients) once per resample for both, so the interval of A - B accounts for
their being tested on the same images. The report is printed as a table
(`format_comparison`) and written as JSON, a CSV of one row per class, mean
and group, and a forest plot (`write_comparison`; names
`cxrlt.layout.ComparisonFiles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlt.evaluation.tables import GroupOptions


@dataclass
class Comparison:
    """The comparison report (`report`), the group and test positives of each class, notes on their sources."""

    report: dict[str, Any]
    groups: list[str]
    positives: np.ndarray
    notes: list[str]

    def format(self) -> str:
        return format_comparison(self.report, self.groups, self.positives)

    def write(self, directory: Path) -> list[Path]:
        return write_comparison(directory, self.report, self.groups, self.positives)


def compare_tables(a: Path, b: Path, labels: Path, *, resamples: int = 1000, level: float = 0.95, seed: int = 0,
                   patients: str | None = None, id_column: str | None = None, allow_missing_classes: bool = False,
                   grouping: GroupOptions = GroupOptions(), val_predictions: Sequence[Path] | None = None,
                   val_labels: Path | None = None, threshold_method: str = "max_f1",
                   target_sensitivity: float = 0.9, progress: bool = False) -> Comparison:
    """Compare prediction tables `a` and `b` (A - B) on the images of `labels`, with paired bootstrap intervals.

    `patients` names the label file's patient id column (resample patients).
    Thresholds for F1 are tuned on `val_predictions` (one per table) against
    `val_labels` when given, else the ones both runs saved, else there is no F1.
    """
    from cxrlt.evaluation.bootstrap import paired_bootstrap
    from cxrlt.evaluation.predictions import align, match_tables, read_label_csv, read_patients, read_predictions
    from cxrlt.evaluation.saved import pair_thresholds

    table_a, table_b = read_predictions(a, id_column), read_predictions(b, id_column)
    rows, columns = match_tables(table_a, table_b, "a paired comparison needs predictions of the same images and "
                                                   "classes")
    data = align(table_a, read_label_csv(labels, id_column, table_a.classes, allow_missing_classes))
    classes = list(data.classes)
    probs_b = table_b.values[rows][:, columns]
    patient_ids = read_patients(labels, data.ids, patients, id_column) if patients else None
    positives = np.sum(data.labels == 1, axis=0)
    groups, _, source = grouping.resolve(classes, [a, b], positives, id_column)
    thresholds, threshold_note = pair_thresholds((a, b), classes, val_predictions, val_labels, id_column,
                                                 threshold_method, target_sensitivity)
    result = paired_bootstrap(data.labels, data.probs, probs_b, classes, resamples=resamples, patients=patient_ids,
                              level=level, seed=seed, progress=progress, thresholds=thresholds)
    report = {"a": str(a), "b": str(b), "labels": str(labels), "n_images": len(data.ids), **result.to_dict(groups)}
    if thresholds is not None:
        report["thresholds"] = {"a": [float(v) for v in thresholds[0]], "b": [float(v) for v in thresholds[1]],
                                "tuned_on": threshold_note}
    return Comparison(report, groups, positives, [source, threshold_note])


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
    from cxrlt.layout import ComparisonFiles

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
    files = ComparisonFiles(Path(directory))
    return [
        write_json(files.report, report),
        write_dataframe_csv(files.table, pd.DataFrame.from_records(records)),
        save_figure(files.figure, comparison_figure(report, groups, positives)),
    ]


def comparison_figure(report: dict[str, Any], groups: list[str], positives: Any) -> Any:
    """Forest plot: per-class and mean differences A - B with intervals, AUC and AP side by side."""
    from matplotlib.figure import Figure

    from cxrlt.data.stats import GROUP_COLOURS

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
