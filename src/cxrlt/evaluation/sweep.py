"""What a sweep's runs add up to: one row per run, mean ± sd over seeds, paired intervals, a plot.

Everything is read from the runs' own result files
(`cxrlt.layout.ResultFiles`: a run's headline files, or a k-fold run's
out-of-fold ones): the metrics report for every score (its `mean` and
`groups` means, so a row repeats exactly what the run reported), and the
predictions and labels (plus those the thresholds were tuned on) for the
paired comparison.

Paired comparison with the baseline: the probabilities of a variant's
finished seeds are averaged per image and class (its seed ensemble), as are
the baseline's, and `cxrlt.evaluation.bootstrap.paired_bootstrap` resamples
whole patients (when their ids are known) of the evaluated images, the same
resamples for both, giving the interval of the difference of the macro
means of AUC, AP and F1 overall and per group. F1 is at per-class
thresholds tuned (as the runs tune theirs) on the seed-averaged validation
probabilities (out-of-fold runs tune on their own scored predictions, as
`cxrlt kfold` does). The interval says how much the choice of evaluated patients
alone could move the comparison of the two ensembles; the spread over seeds
is the sd of the per-run scores.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlt.errors import InputError
from cxrlt.data.stats import GROUPS
from cxrlt.io import read_json, save_figure, write_dataframe_csv, write_json, write_text
from cxrlt.evaluation.scoring import OUT_OF_FOLD
from cxrlt.layout import ResultFiles, SweepFiles

SCORES = ("auc", "ap", "f1", "f1_tuned")
# Columns of the Markdown tables and panels of the plot.
SHOWN = (("auc", "AUC"), ("ap", "mAP"), ("f1_tuned", "F1"))
STATUSES = ("finished", "failed", "interrupted", "running", "pending")


@dataclass
class RunOutcome:
    """Where one run of a sweep stands."""

    variant: str
    seed: int
    status: str
    files: ResultFiles
    seconds: float | None = None
    error: str | None = None
    cpu_seconds: float | None = None

    def metrics(self) -> dict[str, Any]:
        return read_json(self.files.metrics)


def scores(metrics: dict[str, Any]) -> dict[str, float | None]:
    """`mean_auc`, ..., `head_auc`, ...: every macro mean of a metrics.json, overall and per group."""
    scopes = {"mean": metrics["mean"], **metrics.get("groups", {})}
    return {f"{scope}_{name}": means.get(name) for scope, means in scopes.items() for name in SCORES}


def results_table(outcomes: Sequence[RunOutcome]) -> Any:
    """One row per run: variant, seed, status, wall and CPU seconds, evaluated split and images, scores, error."""
    import pandas as pd

    rows = []
    for outcome in outcomes:
        row: dict[str, Any] = {"variant": outcome.variant, "seed": outcome.seed, "status": outcome.status,
                               "seconds": outcome.seconds, "cpu_seconds": outcome.cpu_seconds}
        if outcome.status == "finished":
            metrics = outcome.metrics()
            row.update(split=metrics["split"], n_images=metrics["n_images"], **scores(metrics))
        rows.append({**row, "error": outcome.error})
    frame = pd.DataFrame.from_records(rows)
    ordered = [c for c in frame.columns if c != "error"] + ["error"]
    return frame[ordered]


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample sd (ddof 1; None below two values) of the defined values, and how many there are."""
    defined = [float(v) for v in values if v is not None and np.isfinite(v)]
    mean = float(np.mean(defined)) if defined else None
    sd = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(defined)}


# -------------------------------------------------------------------- summary
def summarise(outcomes: Sequence[RunOutcome], variants: Sequence[str], baseline: str,
              patients: dict[str, Any] | None = None, resamples: int = 1000, level: float = 0.95,
              seed: int = 0) -> dict[str, Any]:
    """The summary.json content: per variant its runs, mean ± sd of every score, and the paired difference.

    `patients` maps image ids to patient keys (None: images are resampled).
    """
    finished = {name: [o for o in outcomes if o.variant == name and o.status == "finished"] for name in variants}
    summary: dict[str, Any] = {"baseline": baseline, "seeds": sorted({o.seed for o in outcomes}), "variants": {}}
    reference = next((runs[0] for runs in [finished.get(baseline, [])] + list(finished.values()) if runs), None)
    if reference is not None:
        metrics = reference.metrics()
        summary.update(split=metrics["split"], n_images=metrics["n_images"], positives=_positives(metrics),
                       tuned_on=metrics.get("thresholds", {}).get("tuned_on"))
    baseline_runs = finished.get(baseline, [])
    for name in variants:
        runs = [o for o in outcomes if o.variant == name]
        per_run = [scores(o.metrics()) for o in finished[name]]
        keys = list(per_run[0]) if per_run else []
        entry: dict[str, Any] = {
            "finished": [o.seed for o in finished[name]],
            "not_finished": {str(o.seed): {"status": o.status, "error": o.error}
                             for o in runs if o.status != "finished"},
            "seconds": mean_sd([o.seconds for o in finished[name]]),
            "cpu_seconds": mean_sd([o.cpu_seconds for o in finished[name]]),
            "scores": {key: {**mean_sd([r[key] for r in per_run]), "values": [r[key] for r in per_run]}
                       for key in keys},
            "vs_baseline": None,
        }
        if name != baseline and finished[name] and baseline_runs:
            entry["vs_baseline"] = paired_difference(finished[name], baseline_runs, patients, resamples, level, seed)
        summary["variants"][name] = entry
    summary["interval"] = {"level": level, "resamples": resamples, "seed": seed,
                           "unit": "patient" if patients is not None else "image",
                           "predictions": "seed-averaged probabilities of each variant's finished runs"}
    return summary


def _positives(metrics: dict[str, Any]) -> dict[str, Any]:
    """Evaluated positives per class and, per group, their range."""
    per_class = {name: {"positives": entry["positives"], "group": entry.get("group")}
                 for name, entry in metrics["per_class"].items()}
    groups: dict[str, dict[str, Any]] = {}
    for name, entry in per_class.items():
        if entry["group"] is not None:
            groups.setdefault(entry["group"], {"classes": []})["classes"].append(name)
    for group in groups.values():
        counts = [per_class[name]["positives"] for name in group["classes"]]
        group.update(min=min(counts), max=max(counts), total=sum(counts))
    ordered = [g for g in GROUPS if g in groups] + sorted(set(groups) - set(GROUPS))
    return {"per_class": per_class, "groups": {g: groups[g] for g in ordered}}


def seed_average(files: Sequence[Path], reference: Any) -> np.ndarray:
    """Mean of the prediction tables `files`, in the rows and columns of `reference` (a ClassTable)."""
    from cxrlt.evaluation.predictions import match_tables, read_predictions

    total = np.zeros_like(reference.values, dtype=np.float64)
    for path in files:
        table = read_predictions(path)
        rows, columns = match_tables(reference, table, "the runs of a sweep must predict the same images")
        total += table.values[rows][:, columns]
    return total / len(files)


def _labelled(predictions: Path, labels: Path) -> tuple[Any, np.ndarray]:
    """A prediction table (the reference order) and its labels in that order."""
    from cxrlt.evaluation.predictions import align, read_label_csv, read_predictions

    table = read_predictions(predictions)
    truth = read_label_csv(labels, classes=table.classes, allow_missing_classes=True)
    return table, align(table, truth).labels


def paired_difference(runs: Sequence[RunOutcome], baseline: Sequence[RunOutcome], patients: dict[str, Any] | None,
                      resamples: int, level: float, seed: int) -> dict[str, Any]:
    """Paired bootstrap of (seed-averaged `runs`) minus (seed-averaged `baseline`): {scope: {metric: entry}}."""
    from cxrlt.evaluation.bootstrap import paired_bootstrap
    from cxrlt.evaluation.metrics import UndefinedMetricWarning, tune_thresholds

    metrics = baseline[0].metrics()
    headline = metrics["split"]
    reference, labels = _labelled(baseline[0].files.predictions, baseline[0].files.labels)
    probs = [seed_average([o.files.predictions for o in side], reference) for side in (runs, baseline)]
    thresholds = None
    if all(o.files.tuning(headline)[0].is_file() for o in [*runs, *baseline]):
        val_reference, val_labels = _labelled(*baseline[0].files.tuning(headline))
        tuning = metrics.get("thresholds", {})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            thresholds = tuple(
                tune_thresholds(val_labels, seed_average([o.files.tuning(headline)[0] for o in side], val_reference),
                                method=tuning.get("method", "max_f1"),
                                target_sensitivity=tuning.get("target_sensitivity", 0.9))
                for side in (runs, baseline))
        thresholds = tuple(t[_order(val_reference.classes, reference.classes)] for t in thresholds)
    groups = [metrics["per_class"][name].get("group") for name in reference.classes]
    clusters = None if patients is None else [patients.get(str(i)) for i in reference.ids]
    result = paired_bootstrap(labels, probs[0], probs[1], reference.classes, resamples=resamples, patients=clusters,
                              level=level, seed=seed, thresholds=thresholds)
    report = result.to_dict(groups if None not in groups else None)
    scopes = {"mean": report["mean"], **report.get("groups", {})}
    return {scope: {name: value for name, value in entry.items() if name != "classes"}
            for scope, entry in scopes.items()}


def _order(classes: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Positions in `classes` of each of `wanted` (by canonical name)."""
    from cxrlt.labels import canonical_key

    where = {canonical_key(c): j for j, c in enumerate(classes)}
    missing = [c for c in wanted if canonical_key(c) not in where]
    if missing:
        raise InputError(f"the validation predictions lack the classes {', '.join(missing)}")
    return [where[canonical_key(c)] for c in wanted]


# ------------------------------------------------------------------- output
def _cell(stats: dict[str, Any] | None) -> str:
    if not stats or stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.3f}" if stats["sd"] is None else f"{stats['mean']:.3f} ± {stats['sd']:.3f}"


def _minutes(stats: dict[str, Any]) -> str:
    return "n/a" if stats["mean"] is None else f"{stats['mean'] / 60:.1f}"


def _time_total(summary: dict[str, Any]) -> str:
    """The time the finished runs took, summed over runs (runs side by side overlap in wall time)."""
    runs = sum(len(entry["finished"]) for entry in summary["variants"].values())
    parts = []
    for key, name in (("seconds", "wall"), ("cpu_seconds", "CPU")):
        stats = [entry[key] for entry in summary["variants"].values() if entry[key]["n"]]
        known = sum(s["n"] for s in stats)
        if known:
            hours = sum(s["mean"] * s["n"] for s in stats) / 3600
            parts.append(f"{hours:.2f} h of {name} time" + (f" ({known} of them recorded it)" if known < runs else ""))
    return f"The {runs} finished runs took " + (" and ".join(parts) if parts else "no recorded time") + \
        ", summed over the runs."


def _difference(entry: dict[str, Any] | None) -> str:
    if not entry or entry["difference"] is None:
        return "n/a"
    if entry["interval"] is None:
        return f"{entry['difference']:+.3f}"
    low, high = entry["interval"]
    return f"{entry['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _scopes(summary: dict[str, Any]) -> list[str]:
    return ["mean", *summary.get("positives", {}).get("groups", {})]


def format_summary(summary: dict[str, Any], title: str = "Sweep summary") -> str:
    """summary.md: the mean ± sd table, the paired differences, positives per group, runs not finished."""
    scopes = _scopes(summary)
    label = {"mean": ""}
    heads = [f"{label.get(scope, scope + ' ')}{name}" for scope in scopes for _, name in SHOWN]
    lines = [f"# {title}", ""]
    if "split" in summary:
        groups = summary["positives"]["groups"]
        counts = "; ".join(f"{g} {e['min']}-{e['max']} ({len(e['classes'])} classes)" for g, e in groups.items())
        lines += [f"Evaluated on the {summary['split']} split, {summary['n_images']} images; positives per class: "
                  f"{counts}. Baseline: {summary['baseline']}.", ""]
    # Summaries written before `tuned_on` was kept are of runs tuned on validation.
    tuned = "its out-of-fold predictions" if summary.get("tuned_on") == OUT_OF_FOLD else "validation"
    lines += [f"Mean ± sample sd over seeds (F1 at the thresholds each run tuned on {tuned}; minutes of wall "
              "and CPU time per finished run, all attempts):", "",
              "| variant | seeds | " + " | ".join(heads) + " | wall min | CPU min |",
              "|---|---:|" + "---:|" * (len(heads) + 2)]
    for name, entry in summary["variants"].items():
        cells = [_cell(entry["scores"].get(f"{scope}_{key}")) for scope in scopes for key, _ in SHOWN]
        cells += [_minutes(entry[key]) for key in ("seconds", "cpu_seconds")]
        lines.append(f"| {name} | {len(entry['finished'])} | " + " | ".join(cells) + " |")
    lines += ["", _time_total(summary)]
    interval = summary["interval"]
    lines += ["", f"Difference to {summary['baseline']}, seed-averaged probabilities, {interval['level']:.0%} paired "
              f"bootstrap interval ({interval['resamples']} resamples of {interval['unit']}s):", "",
              "| variant | " + " | ".join(f"Δ {h}" for h in heads) + " |", "|---|" + "---:|" * len(heads)]
    for name, entry in summary["variants"].items():
        if entry["vs_baseline"] is None:
            continue
        cells = [_difference(entry["vs_baseline"].get(scope, {}).get(key)) for scope in scopes for key, _ in SHOWN]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    missing = [(name, seed, state) for name, entry in summary["variants"].items()
               for seed, state in entry["not_finished"].items()]
    if missing:
        lines += ["", "Runs not finished:", ""]
        lines += [f"- {name} seed {seed}: {state['status']}" + (f": {state['error']}" if state["error"] else "")
                  for name, seed, state in missing]
    return "\n".join(lines) + "\n"


def summary_figure(summary: dict[str, Any]) -> Any:
    """Per metric a panel; per group the variants side by side: each seed a dot, the mean a bar with ± sd."""
    from matplotlib.figure import Figure

    scopes = _scopes(summary)
    variants = list(summary["variants"])
    fig = Figure(figsize=(4.2 * len(SHOWN), 3.6), layout="constrained")
    axes = fig.subplots(1, len(SHOWN))
    width = 0.8 / max(1, len(variants))
    colours = [f"C{k % 10}" for k in range(len(variants))]
    for ax, (key, name) in zip(axes, SHOWN):
        for k, variant in enumerate(variants):
            for s, scope in enumerate(scopes):
                stats = summary["variants"][variant]["scores"].get(f"{scope}_{key}")
                if not stats or stats["mean"] is None:
                    continue
                x = s - 0.4 + width * (k + 0.5)
                values = [v for v in stats["values"] if v is not None]
                ax.scatter([x] * len(values), values, s=9, color=colours[k], alpha=0.6, lw=0)
                ax.errorbar([x], [stats["mean"]], yerr=[[stats["sd"] or 0.0]] * 2, fmt="_", ms=10, color=colours[k],
                            capsize=2, label=variant if s == 0 else None)
        ax.set_xticks(range(len(scopes)), scopes)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{len(variants)} variants; dots: seeds, bars: mean ± sd", fontsize=10)
    return fig


def write_summary(files: SweepFiles, outcomes: Sequence[RunOutcome], variants: Sequence[str], baseline: str,
                  patients: dict[str, Any] | None = None, resamples: int = 1000, level: float = 0.95,
                  title: str = "Sweep summary") -> dict[str, Any]:
    """results.csv, summary.json, summary.md and summary.png of a sweep (atomic writes); the summary."""
    write_dataframe_csv(files.results, results_table(outcomes))
    summary = summarise(outcomes, variants, baseline, patients, resamples, level)
    write_json(files.summary_json, summary)
    write_text(files.summary_md, format_summary(summary, title))
    save_figure(files.plot, summary_figure(summary))
    return summary
