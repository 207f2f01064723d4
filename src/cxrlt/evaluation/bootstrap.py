"""Bootstrap confidence intervals for per-class AUC / AP and their means.

A resample draws the evaluated images with replacement (or, when patient ids
are given, whole patients with replacement: a cluster bootstrap, since images
of one patient are not independent). It is represented by integer
multiplicity weights, one per image, and every metric of the resample is the
metric of the original images with those weights. Those weighted metrics are
exactly scikit-learn's `roc_auc_score` / `average_precision_score` with
`sample_weight` (images of weight 0 drop out), ties included.

Speed: nothing is sorted per resample. Each class is sorted once; in sorted
order only the *distinct scores holding a positive* matter ("positive
groups"). For each of them three weighted counts are needed: its positives,
the negatives tied with it, and the negatives between it and the positive
group below. Every image falls into exactly one such cell per class (or
into the negatives above the top positive group), so the counts of all
resamples are one sparse (cells x images) 0/1 matrix times the dense
(images x resamples) weight matrix, then short cumulative sums over the
positive groups:

* AUC = sum_g p_g (Nbelow_g + t_g / 2) / (P N), with p_g the weighted
  positives of group g, t_g its tied negatives and Nbelow_g the weighted
  negatives scoring lower;
* AP = sum_g p_g * TP_g / (TP_g + FP_g) / P, with TP_g / FP_g the weighted
  positives / negatives scoring >= the group's score (sklearn's step-wise
  average precision, precision not interpolated).

F1 at fixed per-class thresholds (tuned on validation: `f1_tuned`) needs
only the weighted positives, negatives, and true and false positives at the
threshold of each class: four 0/1 indicator rows per class, times the same
weights.

Intervals are percentile intervals of the resampled values. A class with no
weighted positive or no weighted negative in a resample has no value there;
such resamples are left out of its interval (counted in
`undefined_resamples`). A macro mean's replicate is the point mean plus the
mean change, from their point values, of the classes defined in that
resample. Averaging the defined classes' values themselves would shift the
mean's interval: the classes that drop out are the rarest, whose AP (and
often AUC) is lowest, so the interval of a small test set could lie wholly
above the mean it is meant to bracket. Counting a missing class at its
point value instead would hide its uncertainty and narrow the interval of
a small subgroup several-fold; the mean change of the classes present
keeps the spread they show. AP's replicates still run high when a class has
only a few positives (a positive drawn twice ranks its copies together,
raising precision there), so with a handful of positives per class the
percentile interval of AP can lie above the point value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from cxrlt.data.stats import GROUPS

METRICS = ("auc", "ap")
_CHUNK = 16  # resamples per chunk: keeps the weight rows a sparse product reads within the CPU cache


# ----------------------------------------------------------------------- layout
@dataclass(frozen=True)
class _ClassCells:
    """Where one class's cells sit among the rows of the cell matrix.

    Rows `start : start + g` hold the negatives below each positive group
    (ascending score), the next `g` its positives, then one row per positive
    group that has tied negatives (`tie_groups` says which), then one row for
    the negatives above the top positive group.
    """

    start: int
    g: int
    tie_groups: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + 2 * self.g + len(self.tie_groups) + 1


@dataclass(frozen=True)
class _Layout:
    """One score table's sparse (cells x images) 0/1 matrix and its per-class row blocks."""

    cells: Any
    classes: tuple[_ClassCells, ...]

    def counts(self, weights_t: np.ndarray) -> np.ndarray:
        """Weighted counts of every cell for an (images x resamples) weight matrix."""
        return self.cells @ weights_t


def _layout(labels: np.ndarray, scores: np.ndarray, dtype: type) -> _Layout:
    from scipy import sparse

    n, n_classes = labels.shape
    rows, columns, blocks = [], [], []
    start = 0
    for k in range(n_classes):
        known = np.flatnonzero(~np.isnan(labels[:, k]))
        order = known[np.argsort(scores[known, k])]
        s = scores[order, k]
        y = labels[order, k] == 1
        # group number of each image among the class's distinct scores, ascending
        group = np.concatenate(([0], np.cumsum(s[1:] != s[:-1]))) if len(s) else np.zeros(0, np.int64)
        positive_groups = np.unique(group[y])
        g = len(positive_groups)
        slot = np.searchsorted(positive_groups, group)  # first positive group at or above the image's score
        tied = np.zeros(len(s), dtype=bool)
        inside = slot < g
        tied[inside] = positive_groups[slot[inside]] == group[inside]
        tied &= ~y
        tie_groups = np.unique(slot[tied])
        row = np.where(y, start + g + slot, start + slot)
        row[tied] = start + 2 * g + np.searchsorted(tie_groups, slot[tied])
        row[~y & ~inside] = start + 2 * g + len(tie_groups)
        block = _ClassCells(start, g, tie_groups)
        rows.append(row)
        columns.append(order)
        blocks.append(block)
        start = block.stop
    # built by image (CSC) and transposed to CSR in linear time, which leaves
    # the images of each row ascending: the sparse product then reads the
    # weight rows in memory order
    cell_of = np.full((n, n_classes), -1, dtype=np.int64)
    for k, (row, column) in enumerate(zip(rows, columns)):
        cell_of[column, k] = row
    present = cell_of >= 0
    indptr = np.concatenate(([0], np.cumsum(present.sum(axis=1))))
    indices = cell_of[present]
    cells = sparse.csc_matrix((np.ones(len(indices), dtype=dtype), indices, indptr), shape=(start, n)).tocsr()
    return _Layout(cells, tuple(blocks))


def _metrics_from_counts(layout: _Layout, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUC, AP), each (classes x resamples), from the cell counts; NaN where undefined.

    Counts and their cumulative sums are whole numbers, exact in the counts'
    dtype (float32 only while totals stay below 2**24); products, ratios and
    their sums are taken in float64.
    """
    r = counts.shape[1]
    auc = np.full((len(layout.classes), r), np.nan)
    ap = np.full((len(layout.classes), r), np.nan)
    for k, c in enumerate(layout.classes):
        g = c.g
        if g == 0:
            continue
        block = counts[c.start:c.stop]
        p = block[g:2 * g]
        ties = block[2 * g:2 * g + len(c.tie_groups)]
        # weighted negatives scoring strictly below each positive group
        lower = np.cumsum(block[:g], axis=0)
        negatives = lower[-1] + block[-1]
        if len(c.tie_groups):
            t = np.zeros_like(p)
            t[c.tie_groups] = ties
            lower[1:] += np.cumsum(t[:-1], axis=0)
            negatives = negatives + ties.sum(axis=0)
        # weighted positives scoring >= each group (a reversed cumulative sum)
        tp = np.cumsum(p[::-1], axis=0)[::-1]
        positives = tp[0].astype(np.float64)
        negatives = negatives.astype(np.float64)
        ok = (positives > 0) & (negatives > 0)
        if not ok.any():
            continue
        numerator = np.einsum("gr,gr->r", p, lower, dtype=np.float64)
        if len(c.tie_groups):
            numerator += 0.5 * np.einsum("gr,gr->r", p[c.tie_groups], ties, dtype=np.float64)
        predicted = tp - lower
        predicted += negatives.astype(p.dtype)
        # predicted is a whole count, 0 only where tp is 0 too: 0 / 1 = 0
        np.maximum(predicted, 1, out=predicted)
        precision = np.divide(tp, predicted, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc[k] = np.where(ok, numerator / (positives * negatives), np.nan)
            ap[k] = np.where(ok, np.einsum("gr,gr->r", p, precision, dtype=np.float64) / positives, np.nan)
    return auc, ap


def _f1_cells(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, dtype: type) -> Any:
    """Sparse (4 x classes, images) 0/1 rows: positives, negatives, true and false positives at the thresholds."""
    from scipy import sparse

    positive = labels == 1  # NaN (missing) is neither
    negative = labels == 0
    predicted = scores >= np.asarray(thresholds, dtype=np.float64)[None, :]
    rows = np.concatenate([positive, negative, positive & predicted, negative & predicted], axis=1).T
    return sparse.csr_matrix(rows.astype(dtype))


def _f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """F1 (classes x resamples) = 2 TP / (P + TP + FP) from `_f1_cells` counts; NaN where P or N is 0."""
    positives, negatives, tp, fp = np.split(counts.astype(np.float64), 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((positives > 0) & (negatives > 0), 2 * tp / (positives + tp + fp), np.nan)


# ---------------------------------------------------------------------- weights
def _cluster_index(clusters: Sequence[Any] | None, n: int) -> tuple[np.ndarray | None, int]:
    """Cluster number of each image (None: each image its own) and the number of clusters.

    Images without a cluster id (None / NaN / blank) are clusters of their own.
    """
    if clusters is None:
        return None, n
    import pandas as pd

    values = pd.Series(list(clusters), dtype=object)
    if len(values) != n:
        raise ValueError(f"{len(values)} patient ids for {n} images")
    missing = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    codes, uniques = pd.factorize(values[~missing].astype(str))
    index = np.empty(n, dtype=np.int64)
    index[~missing] = codes
    index[missing] = len(uniques) + np.arange(int(missing.sum()))
    return index, len(uniques) + int(missing.sum())


def _weights(rng: np.random.Generator, r: int, index: np.ndarray | None, n_units: int, dtype: type) -> np.ndarray:
    """Multiplicity weights of `r` resamples, (images x resamples), C order."""
    draws = rng.integers(0, n_units, size=(r, n_units))
    draws += (np.arange(r) * n_units)[:, None]
    multiplicity = np.bincount(draws.ravel(), minlength=r * n_units).reshape(r, n_units)
    if index is not None:
        multiplicity = multiplicity[:, index]
    return np.ascontiguousarray(multiplicity.T, dtype=dtype)


def resample_weights(patients: Sequence[Any] | None, n: int, resamples: int, seed: int,
                     chunk: int = _CHUNK) -> Iterator[np.ndarray]:
    """Multiplicity weights (images x resamples), `chunk` resamples at a time, resampling `patients` when given.

    The draws `bootstrap_metrics` makes with the same seed, for statistics
    of other modules (e.g. the true-positive-rate gap between subgroups).
    """
    index, n_units = _cluster_index(patients, n)
    rng = np.random.default_rng(seed)
    for first in range(0, resamples, chunk):
        yield _weights(rng, min(chunk, resamples - first), index, n_units, np.float64)


def _resample(
    labels: np.ndarray,
    tables: Sequence[np.ndarray],
    resamples: int,
    clusters: Sequence[Any] | None,
    seed: int,
    progress: bool,
    description: str,
    thresholds: Any = None,
) -> tuple[list[dict[str, tuple[np.ndarray, np.ndarray]]], str]:
    """Per score table, {metric: (point values, resamples x classes replicates)}.

    Metrics are AUC and AP, plus `f1_tuned` when `thresholds` gives each
    table's per-class thresholds.
    """
    from cxrlt.progress import progress_bar

    n, n_classes = labels.shape
    index, n_units = _cluster_index(clusters, n)
    # counts are integers: float32 is exact while every total stays below
    # 2**24; a resample weighs at most (units drawn) x (largest unit) images
    largest = int(np.bincount(index).max()) if index is not None else 1
    dtype = np.float32 if n_units * largest < 2**24 else np.float64
    layouts = [_layout(labels, t, dtype) for t in tables]
    f1_cells = [None] * len(tables) if thresholds is None else [
        _f1_cells(labels, t, th, dtype) for t, th in zip(tables, thresholds)]

    def scored(layout: _Layout, cells: Any, weights: np.ndarray) -> dict[str, np.ndarray]:
        auc, ap = _metrics_from_counts(layout, layout.counts(weights))
        return {"auc": auc, "ap": ap, **({} if cells is None else {"f1_tuned": _f1_from_counts(cells @ weights)})}

    ones = np.ones((n, 1), dtype=dtype)
    points = [{m: v[:, 0] for m, v in scored(lay, cells, ones).items()} for lay, cells in zip(layouts, f1_cells)]
    replicates = [{m: np.empty((resamples, n_classes)) for m in point} for point in points]
    chunk = int(max(1, min(resamples, _CHUNK)))
    rng = np.random.default_rng(seed)
    with progress_bar(total=resamples, enabled=progress, desc=description, unit="resample", leave=False) as bar:
        for first in range(0, resamples, chunk):
            r = min(chunk, resamples - first)
            weights = _weights(rng, r, index, n_units, dtype)
            for layout, cells, out in zip(layouts, f1_cells, replicates):
                for metric, values in scored(layout, cells, weights).items():
                    out[metric][first:first + r] = values.T
            bar.update(r)
    results = [{m: (point[m], out[m]) for m in point} for point, out in zip(points, replicates)]
    return results, ("image" if clusters is None else "patient")


def _check(labels: Any, scores: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    from cxrlt.evaluation.metrics import as_matrix

    y, p = as_matrix(labels, scores)
    if len(y) == 0:
        raise ValueError(f"no images to bootstrap ({what})")
    return y, p


def _check_options(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


# ---------------------------------------------------------------------- results
def percentile_interval(values: np.ndarray, level: float) -> list[float] | None:
    """The central `level` percentile interval of the finite values (None when there are none)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return None
    tail = 50 * (1 - level)
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return [float(lo), float(hi)]


def _group_masks(classes: Sequence[str], groups: Sequence[str] | None) -> dict[str, np.ndarray]:
    if groups is None:
        return {}
    groups = [str(g) for g in groups]
    if len(groups) != len(classes):
        raise ValueError(f"{len(groups)} group names for {len(classes)} classes")
    names = [g for g in GROUPS if g in groups] + sorted(set(groups) - set(GROUPS))
    labels = np.array(groups)
    return {name: labels == name for name in names}


def _mean(values: np.ndarray, point: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Per-resample macro mean over `members` (classes defined on the evaluated set): the point mean plus
    the mean change, from its point value, of the member classes defined in that resample (module notes)."""
    if not members.any():
        return np.full(values.shape[0], np.nan)
    change = values[:, members] - point[members][None, :]
    count = np.isfinite(change).sum(axis=1)
    total = np.where(np.isfinite(change), change, 0.0).sum(axis=1)
    shift = np.divide(total, count, out=np.full(len(count), np.nan), where=count > 0)
    return point[members].mean() + shift


@dataclass
class BootstrapResult:
    """Point values and bootstrap replicates of per-class AUC and AP (and F1 at tuned thresholds).

    `auc` / `ap` are the point values (classes,), `auc_samples` /
    `ap_samples` the replicates (resamples x classes), NaN where a class is
    undefined. `f1_tuned` / `f1_tuned_samples` likewise when thresholds
    were given, else None. `unit` is "image" or "patient".
    """

    classes: tuple[str, ...]
    auc: np.ndarray
    ap: np.ndarray
    auc_samples: np.ndarray
    ap_samples: np.ndarray
    unit: str
    level: float = 0.95
    seed: int = 0
    f1_tuned: np.ndarray | None = None
    f1_tuned_samples: np.ndarray | None = None

    @classmethod
    def from_resampled(cls, classes: tuple[str, ...], values: dict[str, tuple[np.ndarray, np.ndarray]], unit: str,
                       level: float, seed: int) -> "BootstrapResult":
        """From one table's `_resample` output."""
        auc, ap, f1 = values["auc"], values["ap"], values.get("f1_tuned", (None, None))
        return cls(classes, auc[0], ap[0], auc[1], ap[1], unit, level, seed, f1[0], f1[1])

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics resampled: auc, ap and, with thresholds, f1_tuned."""
        return METRICS + (("f1_tuned",) if self.f1_tuned is not None else ())

    @property
    def resamples(self) -> int:
        """Number of bootstrap resamples."""
        return len(self.auc_samples)

    @property
    def defined(self) -> np.ndarray:
        """Classes with a value on the evaluated set (they enter the means)."""
        return np.isfinite(self.auc)

    def samples(self, metric: str) -> np.ndarray:
        """Replicates of `metric` (one of `metrics`), resamples x classes."""
        return {"auc": self.auc_samples, "ap": self.ap_samples, "f1_tuned": self.f1_tuned_samples}[metric]

    def mean_samples(self, metric: str, members: np.ndarray | None = None) -> np.ndarray:
        """Replicates of the macro mean of `metric` over `members` (default: all) among defined classes."""
        chosen = self.defined if members is None else self.defined & members
        return _mean(self.samples(metric), getattr(self, metric), chosen)

    def to_dict(self, groups: Sequence[str] | None = None) -> dict[str, Any]:
        """The `intervals` section of metrics.json.

        `{"level", "resamples", "unit", "seed", "per_class": {class: {"auc": [lo, hi], "ap": [lo, hi]}},
        "mean": {...}, "groups": {group: {...}}, "undefined_resamples": {class: {"auc": n, "ap": n}}}`;
        an interval is null where the metric is undefined on the evaluated set.
        `undefined_resamples` lists only classes undefined in some resample.
        """
        per_class: dict[str, dict[str, Any]] = {}
        undefined: dict[str, dict[str, int]] = {}
        for j, name in enumerate(self.classes):
            per_class[name] = {
                m: percentile_interval(self.samples(m)[:, j], self.level) if self.defined[j] else None for m in self.metrics
            }
            missing = {m: int(np.isnan(self.samples(m)[:, j]).sum()) for m in self.metrics}
            if self.defined[j] and any(missing.values()):
                undefined[name] = missing
        out: dict[str, Any] = {
            "level": self.level, "resamples": self.resamples, "unit": self.unit, "seed": self.seed,
            "per_class": per_class,
            "mean": {m: percentile_interval(self.mean_samples(m), self.level) for m in self.metrics},
        }
        masks = _group_masks(self.classes, groups)
        if masks:
            out["groups"] = {g: {m: percentile_interval(self.mean_samples(m, mask), self.level) for m in self.metrics}
                             for g, mask in masks.items()}
        out["undefined_resamples"] = undefined
        return out


def bootstrap_metrics(
    labels: Any,
    scores: Any,
    classes: Sequence[str] | None = None,
    resamples: int = 1000,
    patients: Sequence[Any] | None = None,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> BootstrapResult:
    """Percentile bootstrap of per-class AUC and AP (images x classes inputs).

    `labels` hold 1 / 0 / NaN (missing, masked per class). With `patients`
    (one id per image; blank ids are patients of their own) whole patients
    are resampled. The same `seed` gives the same replicates.
    """
    _check_options(resamples, level)
    y, p = _check(labels, scores, "labels and scores")
    names = tuple(str(c) for c in classes) if classes is not None else tuple(f"class_{j}" for j in range(y.shape[1]))
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} class names for {y.shape[1]} score columns")
    results, unit = _resample(y, [p], resamples, patients, seed, progress, "bootstrap")
    return BootstrapResult.from_resampled(names, results[0], unit, level, seed)


# ----------------------------------------------------------------------- paired
@dataclass
class PairedResult:
    """Two prediction tables bootstrapped on the same resamples of the same images.

    `a` and `b` are each table's `BootstrapResult` (sharing the resamples);
    differences are A - B.
    """

    a: BootstrapResult
    b: BootstrapResult

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names."""
        return self.a.classes

    @property
    def defined(self) -> np.ndarray:
        """Classes defined on the evaluated set (labels decide, so both tables agree)."""
        return self.a.defined

    def _entry(self, point_a: float, point_b: float, diff: np.ndarray) -> dict[str, Any]:
        if not (np.isfinite(point_a) and np.isfinite(point_b)):
            return {"a": None, "b": None, "difference": None, "interval": None, "share_a_better": None}
        finite = diff[np.isfinite(diff)]
        return {
            "a": float(point_a), "b": float(point_b), "difference": float(point_a - point_b),
            "interval": percentile_interval(diff, self.a.level),
            "share_a_better": float(np.mean(finite > 0)) if len(finite) else None,
        }

    def to_dict(self, groups: Sequence[str] | None = None) -> dict[str, Any]:
        """Per class, mean and group: `{metric: {a, b, difference, interval, share_a_better}}`.

        `share_a_better` is the share of resamples (where the value is
        defined) in which A scores strictly higher than B.
        """
        metrics = self.a.metrics
        per_class = {}
        for j, name in enumerate(self.classes):
            per_class[name] = {
                m: self._entry(getattr(self.a, m)[j], getattr(self.b, m)[j],
                               self.a.samples(m)[:, j] - self.b.samples(m)[:, j])
                for m in metrics
            }

        def summary(members: np.ndarray | None) -> dict[str, Any]:
            chosen = self.defined if members is None else self.defined & members
            out = {}
            for m in metrics:
                point_a = float(np.mean(getattr(self.a, m)[chosen])) if chosen.any() else float("nan")
                point_b = float(np.mean(getattr(self.b, m)[chosen])) if chosen.any() else float("nan")
                diff = self.a.mean_samples(m, members) - self.b.mean_samples(m, members)
                out[m] = self._entry(point_a, point_b, diff)
            out["classes"] = int(chosen.sum())
            return out

        out: dict[str, Any] = {
            "level": self.a.level, "resamples": self.a.resamples, "unit": self.a.unit, "seed": self.a.seed,
            "per_class": per_class, "mean": summary(None),
        }
        masks = _group_masks(self.classes, groups)
        if masks:
            out["groups"] = {g: summary(mask) for g, mask in masks.items()}
        return out


def paired_bootstrap(
    labels: Any,
    scores_a: Any,
    scores_b: Any,
    classes: Sequence[str] | None = None,
    resamples: int = 1000,
    patients: Sequence[Any] | None = None,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
    thresholds: tuple[Sequence[float], Sequence[float]] | None = None,
) -> PairedResult:
    """Paired percentile bootstrap of AUC / AP differences between two score tables.

    Both tables score the same images (rows) and classes (columns) against
    one label matrix; each resample weights the images identically for A and
    B, so the interval of A - B accounts for their correlation. With
    `thresholds` (A's and B's per-class thresholds, e.g. tuned on
    validation) F1 at them (`f1_tuned`) is compared too.
    """
    _check_options(resamples, level)
    y, pa = _check(labels, scores_a, "labels and scores A")
    _, pb = _check(labels, scores_b, "labels and scores B")
    names = tuple(str(c) for c in classes) if classes is not None else tuple(f"class_{j}" for j in range(y.shape[1]))
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} class names for {y.shape[1]} score columns")
    if thresholds is not None and any(len(t) != y.shape[1] for t in thresholds):
        raise ValueError(f"thresholds must give one value per class ({y.shape[1]})")
    results, unit = _resample(y, [pa, pb], resamples, patients, seed, progress, "paired bootstrap", thresholds)
    a, b = (BootstrapResult.from_resampled(names, values, unit, level, seed) for values in results)
    return PairedResult(a, b)


