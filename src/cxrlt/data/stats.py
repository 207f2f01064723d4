"""Label statistics of a table: counts per class, labels per image, co-occurrence.

`LabelStats` is the "class counts" object the rest of the toolkit takes
(losses, samplers, groups, GCN adjacency): `classes`, `positives` and
`negatives` as lists of int. Compute it from the training split only and
pass it on. The plotting functions draw the figures of the thesis (seed
000, figures 14-16) with head / medium / tail colouring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from cxrlt.evaluation.groups import class_groups
from cxrlt.labels import canonical_key
from cxrlt.layout import LABEL_PLOT_FILES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cxrlt.data.table import LabelTable

_NO_FINDING = canonical_key("No Finding")
GROUP_COLOURS = {"head": "#2b6cb0", "medium": "#dd8a2b", "tail": "#c53030"}


@dataclass(frozen=True)
class LabelStats:
    """Counts of one label matrix.

    A label counts as positive when >= 0.5 (tables hold 0 / 1; soft values
    only arise inside batch mixing), negative when below, missing when NaN.

    Attributes:
        classes: class names in column order.
        n_images: number of images (rows).
        positives / negatives / missing: per class.
        labels_per_image: entry k is the number of images with k positive
            findings; a "No Finding" class (any spelling) is not a finding
            and is left out of this count, so entry 0 is the normal images.
        cooccurrence: n_ij, images positive for both i and j (diagonal:
            positives of i), int64 classes x classes.
    """

    classes: tuple[str, ...]
    n_images: int
    positives: list[int]
    negatives: list[int]
    missing: list[int]
    labels_per_image: list[int]
    cooccurrence: np.ndarray = field(repr=False)

    @classmethod
    def from_labels(cls, labels: np.ndarray, classes: Sequence[str]) -> "LabelStats":
        """Statistics of a float label matrix (images x classes, NaN = missing)."""
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[1] != len(classes):
            raise ValueError(f"labels of shape {labels.shape} do not match {len(classes)} classes")
        known = ~np.isnan(labels)
        positive = known & (labels >= 0.5)
        as_float = positive.astype(np.float32)
        # float32 sums of 0/1 are exact below 2**24 images per pair
        cooccurrence = np.rint(as_float.T @ as_float).astype(np.int64)
        findings = [j for j, name in enumerate(classes) if canonical_key(name) != _NO_FINDING]
        per_image = positive[:, findings].sum(axis=1)
        return cls(
            classes=tuple(classes),
            n_images=int(labels.shape[0]),
            positives=[int(v) for v in positive.sum(axis=0)],
            negatives=[int(v) for v in (known & ~positive).sum(axis=0)],
            missing=[int(v) for v in (~known).sum(axis=0)],
            labels_per_image=[int(v) for v in np.bincount(per_image, minlength=1)],
            cooccurrence=cooccurrence,
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
        """P(j | i) = n_ij / n_ii: row i, column j (NaN for classes without positives)."""
        diagonal = np.diag(self.cooccurrence).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(diagonal[:, None] > 0, self.cooccurrence / diagonal[:, None], np.nan)

    def groups(self, **options: Any) -> list[str]:
        """Head / medium / tail per class (`cxrlt.evaluation.groups.class_groups` options; sizes default
        to the label space's)."""
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
