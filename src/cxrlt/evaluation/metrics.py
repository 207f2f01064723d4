"""Exact per-class metrics for multi-label predictions: AUC, AP, F1.

Every metric here is derived from one pass per class: the class's scores are
sorted once (labels that are missing, NaN, are dropped for that class only)
and the positives and negatives are accumulated at each *distinct* score.
That gives the true- and false-positive counts at every threshold a
classifier could use, ties included, which is exactly how scikit-learn builds
its ROC and precision-recall curves; the values agree with
`sklearn.metrics.roc_auc_score`, `average_precision_score` and `f1_score` to
rounding, at a fraction of their cost (see `benchmarks/bench_metrics.py`).

Definitions (for one class, P positives and N negatives among the images whose
label is known; thresholds t run over the distinct scores, highest first;
an image is predicted positive when its score is >= t):

* ROC AUC: area under the ROC curve with straight (trapezoidal) segments,
  i.e. the probability that a random positive outranks a random negative,
  ties counting one half. Undefined (NaN) when P = 0 or N = 0.
* Average precision: sum over thresholds of (R_t - R_{t-1}) * P_t, precision
  taken at each threshold without interpolation. Undefined (NaN) when P = 0,
  and also when N = 0, where it would be 1 whatever the scores are.
* F1 at a threshold: 2 TP / (2 TP + FP + FN); NaN only for 0 / 0 (no
  positives and none predicted), like `f1_score(..., zero_division=nan)`.

Macro means (mAUC, mAP, mF1) are taken over the classes that have at least
one positive and one negative in the evaluated set, the same classes for
every metric; the others are listed in an `UndefinedMetricWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from cxrlt.data.stats import GROUPS


class UndefinedMetricWarning(UserWarning):
    """Some classes have no positive or no negative; their AUC/AP are undefined."""


# --------------------------------------------------------------------------- inputs
def as_matrix(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels (float64, NaN = missing) and scores as (images x classes) arrays.

    Scores keep float32 when given float32, so a tuned threshold (a score
    value) compares exactly as it did during tuning.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_score)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be two arrays of one shape (images x classes)")
    bad = ~np.isfinite(p)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"scores must be finite; {int(bad.sum())} are not, first at row {row}, class {col}")
    known = y[~np.isnan(y)]
    if known.size and not np.all((known == 0) | (known == 1)):
        raise ValueError("labels must be 0, 1 or NaN (missing)")
    return y, p


@dataclass(frozen=True)
class RankedCounts:
    """Cumulative counts at each distinct score of one class, highest first.

    `tp[i]` / `fp[i]` count the positives / negatives scoring >= `thresholds[i]`.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int


def ranked_counts(y_true: np.ndarray, y_score: np.ndarray) -> RankedCounts:
    """Sort one class's scores once and count labels at each distinct score.

    `y_true` may contain NaN (missing); those images are left out.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_score)
    known = ~np.isnan(y)
    if not known.all():
        y, p = y[known], p[known]
    order = np.argsort(p)[::-1]
    p_sorted = p[order]
    hits = np.cumsum(y[order].astype(np.int64))
    # the last image of each run of equal scores closes one threshold
    ends = np.flatnonzero(p_sorted[1:] != p_sorted[:-1])
    ends = np.append(ends, len(p_sorted) - 1) if len(p_sorted) else ends
    tp = hits[ends]
    fp = ends + 1 - tp
    positives = int(hits[-1]) if len(hits) else 0
    return RankedCounts(p_sorted[ends], tp, fp, positives, len(p_sorted) - positives)


def _auc(c: RankedCounts) -> float:
    if c.positives == 0 or c.negatives == 0:
        return float("nan")
    # trapezoids under the ROC curve in integer counts: sum dFP * (TP_prev + TP)
    # is exact, divided once by 2 P N
    fp_steps = np.diff(c.fp, prepend=0)
    tp_pairs = c.tp + np.concatenate(([0], c.tp[:-1]))
    return float(np.dot(fp_steps, tp_pairs)) / (2.0 * c.positives * c.negatives)


def _ap(c: RankedCounts) -> float:
    if c.positives == 0 or c.negatives == 0:
        return float("nan")
    # float operands keep np.dot on its fast path (int x float is ~10x slower)
    tp_steps = np.diff(c.tp, prepend=0).astype(np.float64)
    precision = c.tp / (c.tp + c.fp)
    return float(np.dot(tp_steps, precision)) / c.positives


def _f1_at(c: RankedCounts, threshold: float) -> float:
    # thresholds are descending: how many of them are >= threshold
    k = int(np.searchsorted(-c.thresholds, -threshold, side="right"))
    tp, fp = (int(c.tp[k - 1]), int(c.fp[k - 1])) if k else (0, 0)
    denominator = c.positives + tp + fp  # = 2 TP + FP + FN
    return 2.0 * tp / denominator if denominator else float("nan")


def _per_class(y_true: Any, y_score: Any) -> list[RankedCounts]:
    y, p = as_matrix(y_true, y_score)
    return [ranked_counts(y[:, j], p[:, j]) for j in range(y.shape[1])]


# ------------------------------------------------------------------ public metrics
def roc_auc(y_true: Any, y_score: Any) -> np.ndarray:
    """Per-class ROC AUC, NaN where a class lacks positives or negatives.

    `y_true` and `y_score` are (images x classes) or one class (images,);
    NaN labels are masked per class.
    """
    return np.array([_auc(c) for c in _per_class(y_true, y_score)])


def average_precision(y_true: Any, y_score: Any) -> np.ndarray:
    """Per-class average precision (scikit-learn's step-wise definition).

    NaN where a class lacks positives or negatives; NaN labels are masked.
    """
    return np.array([_ap(c) for c in _per_class(y_true, y_score)])


def f1_scores(y_true: Any, y_score: Any, thresholds: float | Sequence[float] = 0.5) -> np.ndarray:
    """Per-class F1 with images scoring >= threshold predicted positive.

    `thresholds` is one value for all classes or one per class. NaN only for
    a class with no positive that predicts none (0 / 0).
    """
    counts = _per_class(y_true, y_score)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(counts),))
    return np.array([_f1_at(c, float(tj)) for c, tj in zip(counts, t)])


def tune_thresholds(
    y_val: Any,
    p_val: Any,
    method: Literal["max_f1", "sensitivity"] = "max_f1",
    target_sensitivity: float = 0.9,
    fallback: float = 0.5,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """One decision threshold per class, chosen on validation predictions.

    `max_f1` picks the score that maximises F1 (the highest such score when
    several tie); `sensitivity` picks the highest score whose sensitivity
    (recall) reaches `target_sensitivity`, i.e. the most specific threshold
    meeting the target. Thresholds are validation scores themselves, so
    `f1_scores(y_val, p_val, t)` reproduces the maximum exactly. A class with
    no positive in validation gets `fallback`, with a warning naming it
    (by `classes` when given, else by column).
    """
    if method not in ("max_f1", "sensitivity"):
        raise ValueError(f"unknown threshold method {method!r}; expected 'max_f1' or 'sensitivity'")
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
    counts = _per_class(y_val, p_val)
    thresholds = np.full(len(counts), float(fallback))
    no_positive = []
    for j, c in enumerate(counts):
        if c.positives == 0:
            no_positive.append(j)
            continue
        if method == "max_f1":
            best = int(np.argmax(2.0 * c.tp / (c.positives + c.tp + c.fp)))
        else:
            # integer comparison avoids tp / P rounding just below the target
            best = int(np.argmax(c.tp >= np.ceil(target_sensitivity * c.positives - 1e-9)))
        thresholds[j] = float(c.thresholds[best])
    if no_positive:
        names = [str(classes[j]) if classes is not None else f"column {j}" for j in no_positive]
        warnings.warn(
            f"no positive validation label for {len(no_positive)} class(es), which keep the threshold "
            f"{fallback:g}: {', '.join(names)}",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    return thresholds


def roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of one class, from (0, 0).

    Points on a straight segment are dropped; NaN labels are masked. Empty
    arrays when the class lacks positives or negatives.
    """
    c = ranked_counts(y_true, y_score)
    if c.positives == 0 or c.negatives == 0:
        return np.empty(0), np.empty(0)
    fp = np.concatenate(([0], c.fp))
    tp = np.concatenate(([0], c.tp))
    keep = np.ones(len(fp), dtype=bool)
    keep[1:-1] = (np.diff(fp, 2) != 0) | (np.diff(tp, 2) != 0)
    return fp[keep] / c.negatives, tp[keep] / c.positives


def pr_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of one class at each distinct score, highest first.

    Empty arrays when the class has no positive; NaN labels are masked.
    """
    c = ranked_counts(y_true, y_score)
    if c.positives == 0:
        return np.empty(0), np.empty(0)
    return c.tp / c.positives, c.tp / (c.tp + c.fp)


# ------------------------------------------------------------------------- result
@dataclass
class MetricResult:
    """Per-class metrics of one prediction set, in class order.

    Arrays hold NaN where a metric is undefined. `f1_tuned` and `thresholds`
    are present when per-class thresholds were given.
    """

    classes: tuple[str, ...]
    auc: np.ndarray
    ap: np.ndarray
    f1: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    threshold: float = 0.5
    thresholds: np.ndarray | None = None
    f1_tuned: np.ndarray | None = None

    @property
    def defined(self) -> np.ndarray:
        """Classes with at least one positive and one negative (they enter the means)."""
        return (self.positives > 0) & (self.negatives > 0)

    @property
    def undefined_classes(self) -> list[str]:
        """Names of the classes left out of the means."""
        return [name for name, ok in zip(self.classes, self.defined) if not ok]

    def _metrics(self) -> dict[str, np.ndarray]:
        columns = {"auc": self.auc, "ap": self.ap, "f1": self.f1}
        if self.f1_tuned is not None:
            columns["f1_tuned"] = self.f1_tuned
        return columns

    def _means(self, members: np.ndarray) -> dict[str, Any]:
        used = members & self.defined
        out: dict[str, Any] = {
            name: float(np.mean(values[used])) if used.any() else None for name, values in self._metrics().items()
        }
        out["classes"] = int(members.sum())
        out["evaluated"] = int(used.sum())
        return out

    def _check_groups(self, groups: Sequence[str] | None) -> list[str] | None:
        if groups is None:
            return None
        groups = [str(g) for g in groups]
        if len(groups) != len(self.classes):
            raise ValueError(f"{len(groups)} group names for {len(self.classes)} classes")
        return groups

    def summary(self, groups: Sequence[str] | None = None) -> dict[str, Any]:
        """Macro means overall (`mean`) and per group (`groups`, when given).

        `groups` names each class's group (e.g. from `class_groups` on the
        training positives). Each entry holds the means of `auc`, `ap`, `f1`
        (and `f1_tuned`), `classes` (classes in the set) and `evaluated`
        (those with positives and negatives, which the means use); a mean
        over no evaluable class is None.
        """
        out: dict[str, Any] = {"mean": self._means(np.ones(len(self.classes), dtype=bool))}
        groups = self._check_groups(groups)
        if groups is not None:
            names = [g for g in GROUPS if g in groups] + sorted(set(groups) - set(GROUPS))
            labels = np.array(groups)
            out["groups"] = {name: self._means(labels == name) for name in names}
        return out

    def to_dict(self, groups: Sequence[str] | None = None) -> dict[str, Any]:
        """The JSON report: `per_class`, `mean` and (with groups) `groups`.

        `per_class` maps each class to `auc`, `ap`, `f1`, `positives`,
        `negatives`, plus `f1_tuned` and `threshold` when tuned and `group`
        when groups are given. Undefined values are None (JSON null).
        """
        groups = self._check_groups(groups)
        per_class: dict[str, dict[str, Any]] = {}
        for j, name in enumerate(self.classes):
            entry: dict[str, Any] = {key: _value(values[j]) for key, values in self._metrics().items()}
            entry["positives"] = int(self.positives[j])
            entry["negatives"] = int(self.negatives[j])
            if self.thresholds is not None:
                entry["threshold"] = _value(self.thresholds[j])
            if groups is not None:
                entry["group"] = groups[j]
            per_class[name] = entry
        return {"per_class": per_class, **self.summary(groups)}

    def format_table(
        self, groups: Sequence[str] | None = None, train_positives: Sequence[float] | None = None
    ) -> str:
        """A plain-text table: one row per class, then the means.

        Columns: class, group, positives (and training positives when given),
        AUC, AP, F1 at the default threshold, and F1 at the tuned threshold
        with that threshold when tuned. Undefined values print as `n/a`.
        """
        groups = self._check_groups(groups)
        header = ["class"]
        if groups is not None:
            header.append("group")
        if train_positives is not None:
            header.append("train pos")
        header += ["pos", "AUC", "AP", f"F1@{self.threshold:g}"]
        if self.f1_tuned is not None:
            header += ["F1@tuned", "threshold"]
        rows: list[list[str]] = []
        for j, name in enumerate(self.classes):
            row = [name]
            if groups is not None:
                row.append(groups[j])
            if train_positives is not None:
                row.append(str(int(train_positives[j])))
            row += [str(int(self.positives[j])), _fmt(self.auc[j]), _fmt(self.ap[j]), _fmt(self.f1[j])]
            if self.f1_tuned is not None and self.thresholds is not None:
                row += [_fmt(self.f1_tuned[j]), _fmt(self.thresholds[j], '.4g')]
            rows.append(row)
        summary = self.summary(groups)
        n_lead = len(header) - len(self._metrics()) - (1 if self.f1_tuned is not None else 0)
        for name, means in [("mean", summary["mean"])] + list(summary.get("groups", {}).items()):
            row = [f"{name} ({means['evaluated']} of {means['classes']})"] + [""] * (n_lead - 1)
            row += [_fmt(means[key]) for key in self._metrics()]
            rows.append(row + ([""] if self.f1_tuned is not None else []))
        n_class_rows = len(self.classes)
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
            return "  ".join(parts).rstrip()

        rule = "-" * len(line(header))
        out = [line(header), rule] + [line(r) for r in rows[:n_class_rows]] + [rule]
        out += [line(r) for r in rows[n_class_rows:]]
        if self.undefined_classes:
            out.append(f"n/a: no positive or no negative in the evaluated set ({', '.join(self.undefined_classes)})")
        return "\n".join(out)


def _value(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, spec)


def compute_metrics(
    y_true: Any,
    y_score: Any,
    classes: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
    threshold: float = 0.5,
) -> MetricResult:
    """AUC, AP, F1 at `threshold` (and at per-class `thresholds`) for every class.

    `y_true` is (images x classes) with 1, 0 or NaN (missing, masked per
    class); `y_score` the predicted probabilities. Classes without a positive
    or a negative are reported in an `UndefinedMetricWarning` and left out
    of the means.
    """
    y, p = as_matrix(y_true, y_score)
    n_classes = y.shape[1]
    names = tuple(str(c) for c in classes) if classes is not None else tuple(f"class_{j}" for j in range(n_classes))
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} score columns")
    tuned = None
    if thresholds is not None:
        tuned = np.asarray(thresholds, dtype=np.float64)
        if tuned.shape != (n_classes,):
            raise ValueError(f"{tuned.shape} thresholds for {n_classes} classes")
    counts = [ranked_counts(y[:, j], p[:, j]) for j in range(n_classes)]
    result = MetricResult(
        classes=names,
        auc=np.array([_auc(c) for c in counts]),
        ap=np.array([_ap(c) for c in counts]),
        f1=np.array([_f1_at(c, threshold) for c in counts]),
        positives=np.array([c.positives for c in counts], dtype=np.int64),
        negatives=np.array([c.negatives for c in counts], dtype=np.int64),
        threshold=float(threshold),
        thresholds=tuned,
        f1_tuned=None if tuned is None else np.array([_f1_at(c, float(t)) for c, t in zip(counts, tuned)]),
    )
    undefined = result.undefined_classes
    if undefined:
        details = ", ".join(
            f"{name} ({'no positive' if pos == 0 else 'no negative'})"
            for name, pos, ok in zip(names, result.positives, result.defined)
            if not ok
        )
        warnings.warn(
            f"AUC and AP are undefined for {len(undefined)} of {n_classes} classes, left out of the means: {details}",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    return result


def monitor_metrics(y_true: Any, y_score: Any) -> dict[str, Any]:
    """Validation summary used during training: mean AP, mean AUC, per-class AP.

    Undefined classes are left out of the means silently (the final
    evaluation reports them); a mean over no class is NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = compute_metrics(y_true, y_score)
    defined = result.defined
    return {
        "map": float(np.mean(result.ap[defined])) if defined.any() else float("nan"),
        "auc": float(np.mean(result.auc[defined])) if defined.any() else float("nan"),
        "ap_per_class": [float(v) for v in result.ap],
    }
