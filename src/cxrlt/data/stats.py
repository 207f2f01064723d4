"""Label statistics, the one home of them: positives, co-occurrence, P(j | i), head / medium / tail, the
label frequencies a class sampler produces, and the figures of a label matrix.

Every statistic reads a float label matrix (images x classes) the same way:

- a label is *positive* when it is >= 0.5 (`positive_matrix`), *negative*
  when below, *missing* when NaN. Tables hold 0 / 1 / NaN; values in between
  only arise from batch mixing, and >= 0.5 is the rule the metrics use for a
  score (predicted positive when >= the threshold);
- n_ij (`cooccurrence`): images positive for both i and j; n_ii = positives
  of i;
- P(j | i) (`conditional_probabilities`, `LabelStats.conditional`): the
  share of the images positive for i *whose label j is annotated* that are
  positive for j, n_ij / m_ij with m_ij = images positive for i with j not
  missing. Without missing labels m_ij = n_ii and this is ML-GCN's
  n_ij / n_i (SPEC 3); an image that never says whether j is present is no
  evidence either way. NaN where m_ij = 0 (i never positive, or j never
  annotated alongside it): undefined, which the GCN reads as "no edge" and
  the co-occurrence plot leaves blank;
- head / medium / tail (`class_groups`) from training positives;
- the expected label frequency under two-stage class sampling, seed 002
  eq. (1) (`expected_label_frequency`, `label_rates`), which the samplers of
  `cxrlt.data.samplers` draw by.

`LabelStats` is the "class counts" object the rest of the toolkit takes
(losses, samplers, groups, GCN adjacency): `classes`, `positives` and
`negatives` as lists of int. Compute it from the training split only and
pass it on. The plotting functions draw the figures of the thesis (seed
000, figures 14-16) in the head / medium / tail colours `GROUP_COLOURS`,
which every figure and page of the toolkit uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import a_third, canonical_key, group_sizes
from cxrlt.layout import LABEL_PLOT_FILES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cxrlt.data.table import LabelTable

log = logging.getLogger(__name__)

Group = Literal["head", "medium", "tail"]
GROUPS: tuple[Group, ...] = ("head", "medium", "tail")
# Okabe-Ito colours (readable with colour-blindness): every head / medium / tail figure and the HTML report.
GROUP_COLOURS = {"head": "#0072B2", "medium": "#E69F00", "tail": "#CC79A7"}
NoFinding = Literal["class", "ignore"]
_NO_FINDING = canonical_key("No Finding")


# ------------------------------------------------------------ definitions
def positive_matrix(labels: Any) -> np.ndarray:
    """Boolean images x classes: True where the label is positive (>= 0.5; NaN, missing, is not)."""
    array = np.asarray(labels, dtype=np.float32)
    if array.ndim != 2:
        raise InputError(f"a label matrix has shape (images, classes); got shape {array.shape}")
    return array >= 0.5  # NaN compares False


def _pair_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive, n, m): the positive matrix, n_ij and m_ij (images positive for i with j annotated)."""
    labels = np.asarray(labels, dtype=np.float32)
    positive = positive_matrix(labels)
    as_float = positive.astype(np.float64)  # float64 sums of 0/1 are exact for any realistic image count
    together = np.rint(as_float.T @ as_float).astype(np.int64)
    annotated = np.rint(as_float.T @ np.isfinite(labels).astype(np.float64)).astype(np.int64)
    return positive, together, annotated


def _conditional(together: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """n_ij / m_ij, NaN where m_ij = 0 (see the module docstring)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(annotated > 0, together / np.maximum(annotated, 1), np.nan)


def cooccurrence(labels: Any) -> np.ndarray:
    """n (classes x classes, int64): n[i, j] images with i and j both positive; n[i, i] = positives of i."""
    return _pair_counts(labels)[1]


def conditional_probabilities(labels: Any) -> np.ndarray:
    """P[i, j] = P(label j positive | label i positive) over the images where i is positive and j annotated.

    The diagonal is 1 for classes with a positive; NaN marks an undefined
    estimate (no image positive for i with j annotated).
    """
    _, together, annotated = _pair_counts(labels)
    return _conditional(together, annotated)


# ------------------------------------------------------------ LabelStats
@dataclass(frozen=True)
class LabelStats:
    """Counts of one label matrix (positive, negative and missing as the module docstring defines them).

    Attributes:
        classes: class names in column order.
        n_images: number of images (rows).
        positives / negatives / missing: per class.
        labels_per_image: entry k is the number of images with k positive
            findings; a "No Finding" class (any spelling) is not a finding
            and is left out of this count, so entry 0 is the normal images.
        cooccurrence: n_ij, images positive for both i and j (diagonal:
            positives of i), int64 classes x classes.
        annotated_pairs: m_ij, images positive for i whose label j is
            annotated: the denominators of `conditional`.
    """

    classes: tuple[str, ...]
    n_images: int
    positives: list[int]
    negatives: list[int]
    missing: list[int]
    labels_per_image: list[int]
    cooccurrence: np.ndarray = field(repr=False)
    annotated_pairs: np.ndarray = field(repr=False)

    @classmethod
    def from_labels(cls, labels: np.ndarray, classes: Sequence[str]) -> "LabelStats":
        """Statistics of a float label matrix (images x classes, NaN = missing)."""
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[1] != len(classes):
            raise ValueError(f"labels of shape {labels.shape} do not match {len(classes)} classes")
        positive, together, annotated = _pair_counts(labels)
        known = ~np.isnan(labels)
        findings = [j for j, name in enumerate(classes) if canonical_key(name) != _NO_FINDING]
        per_image = positive[:, findings].sum(axis=1)
        return cls(
            classes=tuple(classes),
            n_images=int(labels.shape[0]),
            positives=[int(v) for v in positive.sum(axis=0)],
            negatives=[int(v) for v in (known & ~positive).sum(axis=0)],
            missing=[int(v) for v in (~known).sum(axis=0)],
            labels_per_image=[int(v) for v in np.bincount(per_image, minlength=1)],
            cooccurrence=together,
            annotated_pairs=annotated,
        )

    @classmethod
    def from_table(cls, table: "LabelTable") -> "LabelStats":
        """Statistics of every row of `table` (select a split first if needed)."""
        return cls.from_labels(table.labels, table.classes)

    @property
    def prevalence(self) -> np.ndarray:
        """Positives / annotated images per class (NaN when none is annotated)."""
        pos = np.asarray(self.positives, dtype=np.float64)
        annotated = pos + np.asarray(self.negatives, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(annotated > 0, pos / annotated, np.nan)

    def conditional(self) -> np.ndarray:
        """P(j | i): row i, column j, as `conditional_probabilities` defines it (NaN where undefined)."""
        return _conditional(self.cooccurrence, self.annotated_pairs)

    def groups(self, **options: Any) -> list[str]:
        """Head / medium / tail per class (`class_groups` options; sizes default to the label space's)."""
        return list(class_groups(self.positives, **options, classes=self.classes))

    def to_json(self, groups: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-ready summary; `groups` defaults to `self.groups()`."""
        groups = list(groups) if groups is not None else self.groups()
        prevalence = self.prevalence
        return {
            "n_images": self.n_images,
            "classes": {
                name: {
                    "positives": self.positives[j],
                    "negatives": self.negatives[j],
                    "missing": self.missing[j],
                    "prevalence": float(prevalence[j]),
                    "group": groups[j],
                }
                for j, name in enumerate(self.classes)
            },
            "labels_per_image": list(self.labels_per_image),
            "cooccurrence": {"classes": list(self.classes), "counts": self.cooccurrence.tolist()},
        }


# ---------------------------------------------------- head / medium / tail
def class_groups(
    positives: Sequence[float],
    method: Literal["rank", "count"] = "rank",
    head: int = 0,
    tail: int = 0,
    head_min: int = 1000,
    tail_max: int = 100,
    classes: Sequence[str] | None = None,
) -> list[Group]:
    """Assign each class to head, medium or tail by its training positives.

    `rank` puts the `head` most frequent classes in head and the `tail` least
    frequent in tail; 0 means the default of the label space of `classes`
    (`cxrlt.labels.group_sizes`: CXR-LT 2023 9 and 9 of 26, as seed 002),
    or a third of the classes when they are not given. Ties in count are
    broken by class order, so the result is deterministic.
    `count` uses thresholds: head when positives >= head_min, tail when
    positives < tail_max, medium otherwise.
    """
    counts = np.asarray(positives, dtype=float)
    n = len(counts)
    if method == "count":
        return ["head" if c >= head_min else "tail" if c < tail_max else "medium" for c in counts]
    if classes is not None and len(classes) != n:
        raise ValueError(f"{len(classes)} class names for {n} positive counts")
    default_head, default_tail = group_sizes(classes) if classes is not None else (a_third(n), a_third(n))
    n_head = head or default_head
    n_tail = tail or default_tail
    if n_head + n_tail > n:
        raise ValueError(f"{n_head} head + {n_tail} tail classes exceed the {n} classes")
    order = np.argsort(-counts, kind="stable")  # most frequent first
    groups: list[Group] = ["medium"] * n
    for i in order[:n_head]:
        groups[i] = "head"
    for i in order[n - n_tail:] if n_tail else []:
        groups[i] = "tail"
    return groups


# ------------------------------------------- label frequency under sampling
def label_indicators(positive: np.ndarray) -> np.ndarray:
    """The class columns of a positive matrix plus one column "no positive label" (N x (C + 1))."""
    return np.column_stack([positive, ~positive.any(axis=1)])


def sampling_classes(indicators: np.ndarray, no_finding: NoFinding) -> np.ndarray:
    """Columns of `label_indicators` that class samplers pick from: the non-empty classes, and with
    `no_finding="class"` the implicit "no positive label" class when some image has none."""
    if no_finding not in ("class", "ignore"):
        raise ConfigError(f"no_finding must be 'class' or 'ignore', got {no_finding!r}")
    n_classes = indicators.shape[1] - 1
    candidates = np.arange(n_classes + (1 if no_finding == "class" else 0))
    counts = indicators[:, candidates].sum(axis=0)
    empty = candidates[(counts == 0) & (candidates < n_classes)]
    if len(empty):
        log.warning("classes %s have no positive image and are left out of sampling",
                    ", ".join(str(int(c)) for c in empty))
    chosen = candidates[counts > 0]
    if len(chosen) == 0:
        raise InputError("no image has a positive label, so there is no class to sample from "
                         "(use no_finding: class, or the instance sampler)")
    return chosen


def label_rates(indicators: np.ndarray, classes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Eq. (1) for every indicator column: sum_j p(j) n_ij / n_j over the sampling classes j."""
    cooc = indicators.T.astype(np.float64) @ indicators[:, classes].astype(np.float64)  # n_ij
    return (cooc / cooc[classes, np.arange(len(classes))]) @ probs


def _check_probs(class_probs: Any, size: int) -> np.ndarray:
    probs = np.asarray(class_probs, dtype=float)
    if probs.shape != (size,) or not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.sum() <= 0:
        raise ConfigError(
            f"class_probs must be {size} non-negative finite numbers with a positive sum "
            f"(one per sampling class), got shape {probs.shape}"
        )
    return probs / probs.sum()


def expected_label_frequency(labels: Any, class_probs: Sequence[float] | None = None, *,
                             no_finding: NoFinding = "class") -> np.ndarray:
    """Expected label frequencies under two-stage class sampling, seed 002 eq. (1).

    p_i = sum_j p(j) n_ij / n_j: the probability that a drawn image carries
    label i when the class j is picked with probability p(j) and then an image
    positive for j uniformly; n_ij counts images positive for both i and j,
    n_j = n_jj. The sampling classes j are the columns of `labels` that have a
    positive image, followed, with `no_finding="class"` and when some image
    has no positive label, by the implicit "no finding" class (exactly the
    classes `cycle` uses). `class_probs` gives p(j) over those classes (it is
    normalised); by default p(j) is uniform, which is `cycle`.

    Returns one value per column of `labels` (labels of the implicit class
    are not returned; its own frequency is the last row of
    `cxrlt.data.samplers.sampler_frequency_table`).
    """
    indicators = label_indicators(positive_matrix(labels))
    classes = sampling_classes(indicators, no_finding)
    probs = (np.full(len(classes), 1 / len(classes)) if class_probs is None
             else _check_probs(class_probs, len(classes)))
    return label_rates(indicators, classes, probs)[:-1]


# ----------------------------------------------------------------- text
def dataset_summary(
    table: "LabelTable", split: str | None = None, groups_options: dict[str, Any] | None = None
) -> tuple[LabelStats, dict[str, Any]]:
    """The statistics of `table` (or one split of it) and the JSON document of `cxrlt stats`.

    Keys: n_images, n_patients, classes (name -> positives, negatives,
    missing, prevalence, group), labels_per_image, cooccurrence; when the
    table has splits: splits (name -> images), patients_in_both (patients
    with images in more than one split) and per_split (name -> class ->
    positives).
    """
    import pandas as pd

    groups_key = table.patient_groups()
    has_splits = table.meta["split"].notna().any()
    selected = table if split is None else table.split(split)
    stats = LabelStats.from_table(selected)
    payload: dict[str, Any] = stats.to_json(stats.groups(**(groups_options or {})))
    in_split = (table.meta["split"] == split).fillna(False).to_numpy(dtype=bool) if split is not None else None
    selected_groups = groups_key if in_split is None else groups_key[in_split]
    payload = {"n_images": payload.pop("n_images"), "n_patients": int(len(np.unique(selected_groups.astype(str)))),
               **payload}
    if split is not None:
        payload["split"] = split
    if has_splits:
        parts = table.meta["split"]
        counts = parts.value_counts()
        payload["splits"] = {name: int(counts.get(name, 0)) for name in ("train", "val", "test") if name in counts}
        per_patient = pd.DataFrame({"patient": groups_key, "split": parts.to_numpy()}).dropna()
        payload["patients_in_both"] = int((per_patient.groupby("patient")["split"].nunique() > 1).sum())
        payload["per_split"] = {
            name: dict(zip(table.classes, LabelStats.from_table(table.split(name)).positives))
            for name in payload["splits"]
        }
    return stats, payload


def format_summary(payload: dict[str, Any]) -> str:
    """One line of `dataset_summary`'s document: images, patients, splits and patients in more than one."""
    line = f"{payload['n_images']:,} images, {payload['n_patients']:,} patients"
    if "split" in payload:
        line += f" (split {payload['split']})"
    if "splits" in payload:
        parts = ", ".join(f"{name} {count:,}" for name, count in payload["splits"].items())
        line += f"; splits: {parts}; patients in more than one split: {payload['patients_in_both']:,}"
    return line


def format_table(stats: LabelStats, groups: Sequence[str] | None = None) -> str:
    """A plain-text table, most frequent class first: positives, negatives, %, group."""
    groups = list(groups) if groups is not None else stats.groups()
    show_missing = any(stats.missing)
    width = max([len("class")] + [len(name) for name in stats.classes])
    header = f"{'class':<{width}}  {'positives':>9}  {'negatives':>9}" + (f"  {'missing':>9}" if show_missing else "")
    header += f"  {'%':>6}  group"
    rows = [header, "-" * len(header)]
    prevalence = stats.prevalence
    for j in np.argsort(-np.asarray(stats.positives), kind="stable"):
        line = f"{stats.classes[j]:<{width}}  {stats.positives[j]:>9,}  {stats.negatives[j]:>9,}"
        if show_missing:
            line += f"  {stats.missing[j]:>9,}"
        percent = "-" if np.isnan(prevalence[j]) else f"{100 * prevalence[j]:.2f}"
        rows.append(line + f"  {percent:>6}  {groups[j]}")
    return "\n".join(rows)


# ------------------------------------------------------------------- plots
def _ordered(stats: LabelStats) -> np.ndarray:
    return np.argsort(-np.asarray(stats.positives), kind="stable")


def plot_label_distribution(
    stats: LabelStats, groups: Sequence[str] | None = None, log: bool = False, title: str | None = None
) -> "Figure":
    """Horizontal bars of positives per class, most frequent on top, coloured by group."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import StrMethodFormatter

    groups = list(groups) if groups is not None else stats.groups()
    order = _ordered(stats)
    n = len(order)
    figure = Figure(figsize=(8, 1.2 + 0.32 * n))
    ax = figure.subplots()
    values = np.asarray(stats.positives)[order]
    y = np.arange(n)
    ax.barh(y, np.maximum(values, 0.8 if log else 0), color=[GROUP_COLOURS[groups[j]] for j in order])
    ax.set_yticks(y, [stats.classes[j] for j in order])
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    prevalence = stats.prevalence[order]
    for i, (value, share) in enumerate(zip(values, prevalence)):
        label = f" {value:,}" + ("" if np.isnan(share) else f" ({100 * share:.1f}%)")
        ax.text(max(value, 1 if log else 0), i, label, va="center", ha="left", fontsize=8)
    right = values.max() if n else 1
    ax.set_xlim(right=right * (4 if log else 1.3) if right > 0 else 1)
    ax.set_xlabel("positive images (% of the images annotated for the class)" + (", log scale" if log else ""))
    ax.set_title(title or f"Positive images per class ({stats.n_images:,} images)")
    present = [g for g in GROUP_COLOURS if g in groups]
    ax.legend(handles=[Patch(color=GROUP_COLOURS[g], label=g) for g in present], loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return figure


def plot_labels_per_image(stats: LabelStats, title: str | None = None) -> "Figure":
    """Bars of how many images carry 0, 1, 2... positive findings, with percentages."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    counts = np.asarray(stats.labels_per_image)
    figure = Figure(figsize=(max(5.0, 0.6 * len(counts) + 2), 4))
    ax = figure.subplots()
    k = np.arange(len(counts))
    ax.bar(k, counts, color="#4a5568")
    total = max(stats.n_images, 1)
    for x, value in zip(k, counts):
        ax.text(x, value, f"{value:,}\n{100 * value / total:.1f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(k)
    ax.set_xlabel("positive findings per image")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_ylabel("images")
    ax.set_ylim(top=counts.max() * 1.2 if len(counts) and counts.max() > 0 else 1)
    ax.set_title(title or f"Labels per image ({stats.n_images:,} images)")
    ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return figure


def plot_cooccurrence(
    stats: LabelStats,
    mode: Literal["conditional", "counts"] = "conditional",
    annotate: bool | None = None,
    title: str | None = None,
) -> "Figure":
    """Heatmap of label co-occurrence, classes ordered by frequency.

    `conditional`: cell (i, j) is P(column j | row i) in percent, the
    diagonal (always 100%) left blank so that the colour scale shows the
    off-diagonal structure. `counts`: n_ij on a log colour scale. Cells are
    annotated when there are at most 20 classes (default).
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    order = _ordered(stats)
    names = [stats.classes[j] for j in order]
    n = len(order)
    annotate = n <= 20 if annotate is None else annotate
    size = max(5.0, 0.5 * n + 2.5)
    figure = Figure(figsize=(size + 1.2, size))
    ax = figure.subplots()
    if mode == "conditional":
        values = 100 * stats.conditional()[np.ix_(order, order)]
        np.fill_diagonal(values, np.nan)
        image = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0)
        label = "P(column | row), %"
        text = [[_percent(v) for v in row] for row in values]
        high = np.nanmax(values) if np.isfinite(values).any() else 1.0
    else:
        values = stats.cooccurrence[np.ix_(order, order)].astype(np.float64)
        shown = np.ma.masked_less_equal(values, 0)
        image = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(values.max(), 2)))
        label = "images with both labels"
        text = [[_short(v) for v in row] for row in values]
        high = np.log(max(values.max(), 2))
        values = np.log(np.maximum(values, 1))
    ax.set_xticks(np.arange(n), names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(n), names)
    ax.set_xlabel("co-occurring label (column)")
    ax.set_ylabel("given label (row)")
    if annotate:
        for i in range(n):
            for j in range(n):
                if text[i][j]:
                    dark = np.isfinite(values[i, j]) and values[i, j] > 0.55 * high
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "#1a202c")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    ax.set_title(title or ("Label co-occurrence: P(column | row)" if mode == "conditional" else "Label co-occurrence counts"))
    figure.tight_layout()
    return figure


def _percent(value: float) -> str:
    if np.isnan(value):
        return ""
    return "<1" if 0 < value < 0.5 else f"{value:.0f}"


def _short(value: float) -> str:
    if value <= 0:
        return ""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def save_plots(
    stats: LabelStats, folder: str | Path, groups: Sequence[str] | None = None, log: bool = False
) -> list[Path]:
    """Write the four statistics figures as PNGs into `folder` (atomically)."""
    from cxrlt.io import save_figure

    folder = Path(folder)
    return [
        save_figure(folder / LABEL_PLOT_FILES["distribution"], plot_label_distribution(stats, groups, log=log)),
        save_figure(folder / LABEL_PLOT_FILES["labels_per_image"], plot_labels_per_image(stats)),
        save_figure(folder / LABEL_PLOT_FILES["cooccurrence"], plot_cooccurrence(stats, "conditional")),
        save_figure(folder / LABEL_PLOT_FILES["cooccurrence_counts"], plot_cooccurrence(stats, "counts")),
    ]
