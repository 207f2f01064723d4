"""Scores per subgroup (sex, age band, view, source): the `subgroups` and `subgroup_summary` report sections.

For each attribute and each of its subgroups, the images of that subgroup
are scored as a whole set is (`compute_metrics`): AUC, AP and F1 at the
decision thresholds per class, and their macro means over the classes with
a positive and a negative in the subgroup. The thresholds are the per-class
tuned ones when the report has them (else the fixed one): the operating
point a deployed model would use, the same for every subgroup.

Per attribute (`subgroup_summary`):

* `tpr_gap`: per class, the largest minus the smallest true-positive rate
  (sensitivity at the threshold) over the scorable subgroups with a
  positive, the under-diagnosis measure of CheXclusion (Seyyed-Kalantari et
  al., 2021; they report each subgroup's difference to the others, here
  the spread between the best and the worst subgroup), with a bootstrap
  interval when intervals are asked for;
* `worst`: per class, the scorable subgroup with the lowest AUC.

A subgroup with fewer than `min_images` images is "too small to score":
listed with its size, `too_small: true` and no metrics. Intervals resample
patients (when patient ids are given) inside each subgroup for its AUC / AP
and over all images for the TPR gap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cxrlt.evaluation.bootstrap import percentile_interval
from cxrlt.evaluation.metadata import DEFAULT_AGE_EDGES, Attribute

DEFAULT_MIN_IMAGES = 20


@dataclass(frozen=True)
class SubgroupSettings:
    """Which attributes to score, the age band edges, and the smallest subgroup that is scored."""

    attributes: tuple[str, ...]
    age_edges: tuple[float, ...] = DEFAULT_AGE_EDGES
    min_images: int = DEFAULT_MIN_IMAGES


def score_subgroups(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    attributes: dict[str, Attribute],
    *,
    thresholds: np.ndarray,
    tuned: bool,
    min_images: int = DEFAULT_MIN_IMAGES,
    resamples: int = 0,
    level: float = 0.95,
    seed: int = 0,
    patients: Sequence[Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `subgroups` section (attribute -> group -> scores) and `subgroup_summary` (gap, worst, exclusions)."""
    from cxrlt.evaluation.bootstrap import bootstrap_metrics
    from cxrlt.evaluation.metrics import UndefinedMetricWarning, compute_metrics

    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    classes = [str(c) for c in classes]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    patients_arr = None if patients is None else np.asarray(list(patients), dtype=object)
    sections: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for name, attribute in attributes.items():
        values = attribute.values
        groups: dict[str, Any] = {}
        scorable: list[str] = []
        for group in attribute.groups():
            mask = np.array([v == group for v in values])
            n = int(mask.sum())
            if n < min_images:
                groups[group] = {"n_images": n, "too_small": True, "auc": None, "map": None, "f1": None,
                                 "classes": {c: {"auc": None, "ap": None} for c in classes}}
                continue
            scorable.append(group)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                result = compute_metrics(labels[mask], probs[mask], classes, thresholds=thresholds)
            means = result.summary()["mean"]
            entry: dict[str, Any] = {
                "n_images": n, "too_small": False,
                "auc": means["auc"], "map": means["ap"], "f1": means["f1_tuned"], "evaluated": means["evaluated"],
                "classes": {c: {"auc": _num(result.auc[j]), "ap": _num(result.ap[j]),
                                "f1": _num(result.f1_tuned[j]), "tpr": _num(_tpr(labels[mask, j], probs[mask, j],
                                                                                  thresholds[j])),
                                "positives": int(result.positives[j])}
                            for j, c in enumerate(classes)},
            }
            if resamples > 0:
                boot = bootstrap_metrics(labels[mask], probs[mask], classes, resamples=resamples, level=level,
                                         seed=seed, patients=None if patients_arr is None else patients_arr[mask])
                report = boot.to_dict()
                entry["intervals"] = {"auc": report["mean"]["auc"], "map": report["mean"]["ap"],
                                      "classes": report["per_class"]}
            groups[group] = entry
        sections[name] = groups
        summary[name] = {
            "column": attribute.column,
            "excluded": attribute.excluded,
            "too_small": [g for g, e in groups.items() if e["too_small"]],
            "tpr_gap": _tpr_gaps(labels, probs, classes, values, scorable, thresholds, resamples, level, seed,
                                 patients_arr),
            "worst": _worst(groups, scorable, classes),
        }
    settings = {"thresholds": "tuned" if tuned else "fixed", "min_images": int(min_images)}
    return sections, {"settings": settings, **summary}


def _tpr(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    known = y == 1
    return float(np.mean(p[known] >= threshold)) if known.any() else float("nan")


def _tpr_gaps(labels: np.ndarray, probs: np.ndarray, classes: list[str], values: np.ndarray, scorable: list[str],
              thresholds: np.ndarray, resamples: int, level: float, seed: int,
              patients: np.ndarray | None) -> dict[str, Any]:
    """Per class: TPR of each scorable subgroup, the gap (max - min), its interval, and the extreme subgroups."""
    from cxrlt.evaluation.bootstrap import resample_weights

    masks = np.array([[v == g for v in values] for g in scorable], dtype=np.float64).reshape(len(scorable),
                                                                                             len(values))
    positive = (labels == 1).astype(np.float64)  # NaN labels are not positives
    hit = positive * (probs >= thresholds[None, :])
    out: dict[str, Any] = {}
    gap_samples = None
    if resamples > 0 and len(scorable) >= 2:
        chunks = []
        for weights in resample_weights(patients, len(labels), resamples, seed):
            # per group: (classes x images) @ (images x R) -> groups x classes x R
            tp = np.stack([(hit * m[:, None]).T @ weights for m in masks])
            pos = np.stack([(positive * m[:, None]).T @ weights for m in masks])
            chunks.append(_gap(tp, pos))
        gap_samples = np.concatenate(chunks, axis=1)  # classes x R
    tp, pos = masks @ hit, masks @ positive  # groups x classes
    for j, name in enumerate(classes):
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = np.where(pos[:, j] > 0, tp[:, j] / pos[:, j], np.nan)
        defined = np.isfinite(rates)
        entry: dict[str, Any] = {"tpr": {g: _num(r) for g, r in zip(scorable, rates)}, "gap": None,
                                 "highest": None, "lowest": None}
        if defined.sum() >= 2:
            entry["gap"] = float(np.nanmax(rates) - np.nanmin(rates))
            entry["highest"] = scorable[int(np.nanargmax(rates))]
            entry["lowest"] = scorable[int(np.nanargmin(rates))]
        if gap_samples is not None:
            entry["interval"] = percentile_interval(gap_samples[j], level) if entry["gap"] is not None else None
        out[name] = entry
    return out


def _gap(tp: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """max - min TPR over groups with positives (classes x R); NaN where fewer than two have positives."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(pos > 0, tp / np.where(pos > 0, pos, 1), np.nan)
    enough = np.sum(np.isfinite(rates), axis=0) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: masked below
        spread = np.nanmax(rates, axis=0) - np.nanmin(rates, axis=0)
    return np.where(enough, spread, np.nan)


def _worst(groups: dict[str, Any], scorable: list[str], classes: list[str]) -> dict[str, Any]:
    """Per class: the scorable subgroup with the lowest AUC and that AUC (None when no subgroup has one)."""
    out: dict[str, Any] = {}
    for name in classes:
        scored = [(groups[g]["classes"][name]["auc"], g) for g in scorable
                  if groups[g]["classes"][name]["auc"] is not None]
        out[name] = None if not scored else {"group": min(scored)[1], "auc": min(scored)[0]}
    return out


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def format_subgroups(sections: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Plain-text lines: per attribute, each subgroup's size and means, then the largest TPR gaps."""
    lines = []
    for name, groups in sections.items():
        info = summary[name]
        lines.append(f"subgroups by {name} (column {info['column']!r}; {info['excluded']} image(s) without a value "
                     f"left out; thresholds {summary['settings']['thresholds']}):")
        for group, entry in groups.items():
            if entry["too_small"]:
                lines.append(f"  {group:<10} {entry['n_images']:>6} images  too small to score "
                             f"(< {summary['settings']['min_images']})")
                continue
            span = ""
            if "intervals" in entry:
                span = f"  [{_f(entry['intervals']['auc'], 0)}, {_f(entry['intervals']['auc'], 1)}]"
            lines.append(f"  {group:<10} {entry['n_images']:>6} images  AUC {_f(entry['auc'])}{span}  "
                         f"mAP {_f(entry['map'])}  F1 {_f(entry['f1'])}")
        gaps = [(v["gap"], c, v) for c, v in info["tpr_gap"].items() if v["gap"] is not None]
        for gap, cls, v in sorted(gaps, reverse=True)[:3]:
            interval = v.get("interval")
            span = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
            lines.append(f"  TPR gap {cls}: {gap:.3f}{span} ({v['highest']} highest, {v['lowest']} lowest)")
    return lines


def _f(value: Any, index: int | None = None) -> str:
    if index is not None:
        value = None if value is None else value[index]
    return "n/a" if value is None else f"{value:.4f}"
