"""The scoring core: labels and probabilities in, the metrics report (every `metrics.json`) out.

Training (`cxrlt.runs.finish`), `cxrlt evaluate`, k-fold (`cxrlt.runs.kfold`)
and `cxrlt ensemble` all score with `score_predictions`, so their reports
share one schema, in this order:

* `split`, `n_images`: what was scored;
* `aggregate` (study-level scoring): how images were merged into studies
  (`cxrlt.evaluation.studies`), so `n_images` counts studies;
* `protocol` (a named CXR-LT evaluation): its ranking metric and value
  (`cxrlt.evaluation.protocols`);
* `per_class`, `mean`, `groups` (with groups): `MetricResult.to_dict`;
* the caller's own sections (`extras`: training's `tta` and
  `tau_normalisation`, k-fold's `folds` and `merge`, an ensemble's
  `ensemble`);
* `intervals` (with bootstrap resamples): `BootstrapResult.to_dict`, over
  patients when patient ids are given;
* `calibration`: `calibration_summary`, after a temperature too when one is
  given;
* `thresholds` (with per-class thresholds): how they were tuned and the
  sensitivity / specificity at each (`operating_points`);
* `subgroups` and `subgroup_summary` (with per-image metadata): scores per
  sex / age band / view / source subgroup, the true-positive-rate gaps and
  the worst subgroup per class (`cxrlt.evaluation.subgroups`).

The numbers are `cxrlt.evaluation.metrics`', `bootstrap`'s and
`calibration`'s; this module only decides what a report holds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlt.evaluation.bootstrap import bootstrap_metrics
from cxrlt.evaluation.calibration import calibration_summary, operating_points
from cxrlt.evaluation.metadata import Attribute
from cxrlt.evaluation.metrics import MetricResult, UndefinedMetricWarning, compute_metrics

# The split name of out-of-fold predictions (k-fold runs score them as one split and tune thresholds on them).
OUT_OF_FOLD = "out-of-fold"
# The sections a report can hold besides the caller's extras.
SECTIONS = ("split", "n_images", "per_class", "mean", "groups", "intervals", "calibration", "thresholds")
# Sections only some reports hold: study-level scoring, a named protocol, per-image metadata.
OPTIONAL_SECTIONS = ("aggregate", "protocol", "subgroups", "subgroup_summary")


@dataclass(frozen=True)
class Tuning:
    """How per-class thresholds were chosen: the head of the report's `thresholds` section."""

    method: str
    tuned_on: str
    target_sensitivity: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "tuned_on": self.tuned_on}
        if self.method == "sensitivity":
            out["target_sensitivity"] = self.target_sensitivity
        return out


@dataclass(frozen=True)
class BootstrapSettings:
    """Percentile bootstrap intervals: `resamples` (0: none), interval `level` and `seed`."""

    resamples: int
    seed: int = 0
    level: float = 0.95


@dataclass
class Scores:
    """A scored prediction set: the report written as `metrics.json`, and what tables and plots need."""

    labels: np.ndarray
    probs: np.ndarray
    result: MetricResult
    metrics: dict[str, Any]
    groups: list[str] | None = None
    train_positives: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def split(self) -> str | None:
        return self.metrics["split"]

    @property
    def table(self) -> str:
        """The per-class table (with training positives when known) and the means."""
        return self.result.format_table(self.groups, self.train_positives)

    def summary_lines(self) -> list[str]:
        return summary_lines(self.metrics)

    def write_plots(self, directory: str | Path) -> list[Path]:
        """ROC, PR, per-class, reliability (and subgroup) plots in `directory` (`cxrlt.layout.PLOT_FILES` names)."""
        from cxrlt.evaluation.calibration import write_reliability_plot
        from cxrlt.evaluation.plots import write_plots
        from cxrlt.layout import PLOT_FILES

        directory = Path(directory)
        plots = write_plots(directory, self.labels, self.probs, self.result, self.groups, self.train_positives)
        plots.append(write_reliability_plot(directory / PLOT_FILES["reliability"], self.labels, self.probs,
                                            self.groups, temperature=self.metrics["calibration"]["temperature"]))
        if "subgroups" in self.metrics:
            from cxrlt.evaluation.plots import subgroup_figure
            from cxrlt.io import save_figure

            plots.append(save_figure(directory / PLOT_FILES["subgroups"],
                                     subgroup_figure(self.metrics["subgroups"], self.metrics["mean"]["auc"])))
        return plots


def score_predictions(
    labels: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    split: str | None,
    groups: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
    tuning: Tuning | None = None,
    threshold: float = 0.5,
    temperature: float | None = None,
    bootstrap: BootstrapSettings | None = None,
    patients: Sequence[Any] | None = None,
    extras: dict[str, Any] | None = None,
    train_positives: Sequence[float] | None = None,
    progress: bool = False,
    subgroups: dict[str, Attribute] | None = None,
    subgroup_min_images: int = 20,
    aggregate: dict[str, Any] | None = None,
    protocol: Any = None,
) -> Scores:
    """Score `probs` against `labels` (images x classes; NaN labels are missing) into the metrics report.

    F1 is reported at `threshold` and, with per-class `thresholds` (chosen as
    `tuning` says), at those too; `temperature` (fitted on validation) adds
    the calibration after it; `bootstrap` with resamples adds intervals,
    resampling `patients` (one id per image) when given. Classes without a
    positive or a negative are named in `Scores.warnings`, not warned about.
    `subgroups` (attribute -> per-image subgroup) adds the subgroup sections,
    at the tuned thresholds when given (else `threshold`); subgroups under
    `subgroup_min_images` images are reported too small. `aggregate` says
    how images were merged into studies; `protocol` (a
    `cxrlt.evaluation.protocols.Protocol`) adds its ranking section.
    """
    if (thresholds is None) != (tuning is None):
        raise ValueError("per-class thresholds and how they were tuned go together")
    clash = sorted(set(extras or {}) & set(SECTIONS + OPTIONAL_SECTIONS))
    if clash:
        raise ValueError(f"extra sections may not replace the report's own: {', '.join(clash)}")
    labels, probs, classes = np.asarray(labels, dtype=np.float64), np.asarray(probs), [str(c) for c in classes]
    groups = None if groups is None else [str(g) for g in groups]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        result = compute_metrics(labels, probs, classes, thresholds=thresholds, threshold=threshold)
    report: dict[str, Any] = {"split": split, "n_images": len(labels)}
    if aggregate is not None:
        report["aggregate"] = aggregate
    if protocol is not None:
        report["protocol"] = protocol.summary(result)
    report.update({**result.to_dict(groups), **(extras or {})})
    if bootstrap is not None and bootstrap.resamples > 0:
        report["intervals"] = bootstrap_metrics(
            labels, probs, classes, resamples=bootstrap.resamples, patients=patients, level=bootstrap.level,
            seed=bootstrap.seed, progress=progress,
        ).to_dict(groups)
    report["calibration"] = calibration_summary(labels, probs, classes, temperature=temperature)
    if thresholds is not None:
        report["thresholds"] = {**tuning.to_dict(), "per_class": operating_points(labels, probs, thresholds, classes)}
    if subgroups:
        from cxrlt.evaluation.subgroups import score_subgroups

        resamples = bootstrap.resamples if bootstrap is not None else 0
        report["subgroups"], report["subgroup_summary"] = score_subgroups(
            labels, probs, classes, subgroups,
            thresholds=np.full(len(classes), threshold) if thresholds is None else np.asarray(thresholds),
            tuned=thresholds is not None, min_images=subgroup_min_images, resamples=resamples,
            level=bootstrap.level if bootstrap is not None else 0.95, seed=bootstrap.seed if bootstrap else 0,
            patients=patients)
    return Scores(labels, probs, result, report, groups,
                  None if train_positives is None else np.asarray(train_positives),
                  [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)])


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The interval and calibration lines printed under a report's table."""
    lines = []
    intervals = report.get("intervals")
    if intervals:
        lines.append(f"{intervals['level']:.0%} bootstrap intervals ({intervals['resamples']} resamples of "
                     f"{intervals['unit']}s): mean AUC {_span(intervals['mean']['auc'])}, "
                     f"mAP {_span(intervals['mean']['ap'])}")
        for name, group in intervals.get("groups", {}).items():
            lines.append(f"  {name}: AUC {_span(group['auc'])}, AP {_span(group['ap'])}")
    if "protocol" in report:
        protocol = report["protocol"]
        lines.append(f"protocol {protocol['name']}: ranking {protocol['ranking_metric']} "
                     f"{_value(protocol['ranking'])}; " + ", ".join(
                         f"{k} {_value(v)}" for k, v in protocol["metrics"].items()))
    if "aggregate" in report:
        agg = report["aggregate"]
        lines.append(f"scored per study: {agg['n_images']} images -> {agg['n_studies']} studies ({agg['method']}); "
                     f"{agg['excluded_images']} image(s) without a study id left out")
    if "subgroups" in report:
        from cxrlt.evaluation.subgroups import format_subgroups

        lines.extend(format_subgroups(report["subgroups"], report["subgroup_summary"]))
    calibration = report["calibration"]
    line = (f"calibration: pooled ECE {_value(calibration['pooled_ece'])}, "
            f"mean per-class ECE {_value(calibration['mean_ece'])}")
    if calibration["temperature"] is not None:
        scaled = calibration["scaled"]
        line += (f"; at T = {calibration['temperature']:.4g}: pooled {_value(scaled['pooled_ece'])}, "
                 f"mean {_value(scaled['mean_ece'])}")
    lines.append(line)
    return lines


def _span(pair: Sequence[float] | None) -> str:
    return "n/a" if pair is None else f"[{pair[0]:.4f}, {pair[1]:.4f}]"


def _value(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
