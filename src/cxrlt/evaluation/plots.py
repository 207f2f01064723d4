"""Evaluation figures: per-class ROC and PR curves, per-class AUC / AP bars.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot state,
no display needed) and saved through `cxrlt.io.save_figure`. Curves come
from `cxrlt.evaluation.metrics`, so the plotted areas are the reported ones.
Classes are coloured by head / medium / tail group (Okabe-Ito colours, which
stay distinct for colour-blind readers).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, TYPE_CHECKING, Sequence

import numpy as np

from cxrlt.data.stats import GROUP_COLOURS
from cxrlt.evaluation.metrics import MetricResult, pr_curve, roc_curve
from cxrlt.layout import PLOT_FILES
from cxrlt.io import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_PLAIN = "#333333"
_PANEL_INCHES = 2.1


def _thin(x: np.ndarray, y: np.ndarray, cells: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Drop points that stay in the same 1/cells-wide cell as the previous one.

    A curve over 75,000 images has as many points; at panel resolution the
    thinned curve is indistinguishable and renders many times faster.
    """
    if len(x) <= cells:
        return x, y
    qx, qy = np.round(x * cells), np.round(y * cells)
    keep = np.ones(len(x), dtype=bool)
    keep[1:-1] = (qx[1:-1] != qx[:-2]) | (qy[1:-1] != qy[:-2])
    return x[keep], y[keep]


def _colour(groups: Sequence[str] | None, j: int) -> str:
    return GROUP_COLOURS.get(groups[j], _PLAIN) if groups is not None else _PLAIN


def _grid(n: int, title: str, xlabel: str, ylabel: str) -> tuple["Figure", np.ndarray]:
    from matplotlib.figure import Figure

    cols = min(n, max(3, math.ceil(math.sqrt(n * 1.6))))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * _PANEL_INCHES, rows * _PANEL_INCHES + 0.6), layout="constrained")
    # fixed [0, 1] limits instead of shared axes: sharing makes layout
    # quadratic in the number of panels (seconds for 40 classes)
    grid = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = grid[r, c]
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.tick_params(labelsize=7)
            if c:
                ax.tick_params(labelleft=False)
            else:
                ax.set_ylabel(ylabel, fontsize=8)
            if r * cols + c + cols < n:  # another panel below: no x labels
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel(xlabel, fontsize=8)
    axes = grid.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return fig, axes


def _panel_title(ax, name: str, groups: Sequence[str] | None, j: int) -> None:
    label = "\n".join(textwrap.wrap(name, 24)[:2])
    ax.set_title(label, fontsize=8, color=_colour(groups, j))


def _group_legend(fig: "Figure", groups: Sequence[str] | None) -> None:
    if groups is None:
        return
    from matplotlib.lines import Line2D

    present = [g for g in GROUP_COLOURS if g in groups]
    handles = [Line2D([], [], color=GROUP_COLOURS[g], lw=2) for g in present]
    fig.legend(handles, present, loc="outside lower center", ncols=len(present), fontsize=8, frameon=False)


def roc_figure(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], groups: Sequence[str] | None = None
) -> "Figure":
    """One small ROC panel per class with its AUC; the chance diagonal dashed."""
    fig, axes = _grid(len(classes), "ROC curves", "false positive rate", "sensitivity")
    for j, name in enumerate(classes):
        ax = axes[j]
        fpr, tpr = roc_curve(labels[:, j], probs[:, j])
        ax.plot([0, 1], [0, 1], ls="--", lw=0.6, color="#999999")
        if len(fpr):
            auc = float(np.trapezoid(tpr, fpr))
            ax.plot(*_thin(fpr, tpr), lw=1.2, color=_colour(groups, j))
            ax.text(0.97, 0.05, f"AUC {auc:.3f}", ha="right", va="bottom", fontsize=8, transform=ax.transAxes)
        else:
            ax.text(0.5, 0.5, "undefined: no positive\nor no negative", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        _panel_title(ax, name, groups, j)
    _group_legend(fig, groups)
    return fig


def pr_figure(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], groups: Sequence[str] | None = None
) -> "Figure":
    """One small precision-recall panel per class with its AP; prevalence dotted."""
    fig, axes = _grid(len(classes), "Precision-recall curves (dotted: prevalence)", "recall", "precision")
    for j, name in enumerate(classes):
        ax = axes[j]
        known = ~np.isnan(labels[:, j])
        recall, precision = pr_curve(labels[:, j], probs[:, j])
        negatives = int((labels[known, j] == 0).sum())
        if len(recall) and negatives:
            # precision applies over (previous recall, recall]: a step drawn "pre"
            ap = float(np.dot(np.diff(recall, prepend=0.0), precision))
            prevalence = float(labels[known, j].mean())
            ax.axhline(prevalence, ls=":", lw=0.8, color="#999999")
            curve = _thin(np.concatenate(([0.0], recall)), np.concatenate(([precision[0]], precision)))
            ax.step(*curve, where="pre", lw=1.2, color=_colour(groups, j))
            ax.text(0.97, 0.95, f"AP {ap:.3f}", ha="right", va="top", fontsize=8, transform=ax.transAxes)
        else:
            ax.text(0.5, 0.5, "undefined: no positive\nor no negative", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        _panel_title(ax, name, groups, j)
    _group_legend(fig, groups)
    return fig


def metric_bars_figure(
    result: MetricResult, groups: Sequence[str] | None = None, train_positives: Sequence[float] | None = None
) -> "Figure":
    """Horizontal bars of per-class AUC and AP, most frequent class on top.

    Classes are ordered by `train_positives` when given, else by positives in
    the evaluated set; bars are coloured by group and the macro mean is a
    vertical line. Undefined values are marked `n/a`.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    counts = np.asarray(train_positives if train_positives is not None else result.positives, dtype=float)
    order = np.argsort(-counts, kind="stable")
    n = len(result.classes)
    fig = Figure(figsize=(9, 1.2 + 0.24 * n), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    count_name = "train pos" if train_positives is not None else "pos"
    names = [f"{result.classes[j]} ({int(counts[j])})" for j in order]
    colours = [_colour(groups, j) for j in order]
    means = result.summary()["mean"]
    y = np.arange(n)
    for ax, key, label in ((axes[0], "auc", "ROC AUC"), (axes[1], "ap", "Average precision")):
        values = getattr(result, key)[order]
        ax.barh(y, np.nan_to_num(values), color=colours, height=0.75)
        for yi, value in zip(y, values):
            text = "n/a" if not np.isfinite(value) else f"{value:.3f}"
            ax.text((value if np.isfinite(value) else 0) + 0.01, yi, text, va="center", fontsize=7)
        if means[key] is not None:
            ax.axvline(means[key], color="#444444", lw=0.9, ls="--")
            label += f" (dashed: mean {means[key]:.3f})"
        ax.set_xlim(0, 1.12)
        ax.set_xlabel(label, fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(y, names)
    axes[0].set_ylim(n - 0.5, -0.5)  # most frequent on top
    axes[0].set_ylabel(f"class ({count_name})", fontsize=9)
    if groups is not None:
        present = [g for g in GROUP_COLOURS if g in groups]
        fig.legend([Patch(color=GROUP_COLOURS[g]) for g in present], present, loc="outside lower center",
                   ncols=len(present), fontsize=8, frameon=False)
    fig.suptitle("Per-class ROC AUC and average precision", fontsize=11)
    return fig


def subgroup_figure(subgroups: dict[str, Any], overall: float | None = None) -> "Figure":
    """Per attribute, each subgroup's mean AUC (with its bootstrap interval when there is one) and its size.

    Subgroups too small to score are listed on the axis with their size and
    no point; the dashed line is `overall`, the mean AUC over all images.
    """
    from matplotlib.figure import Figure

    attributes = list(subgroups)
    rows = sum(len(groups) for groups in subgroups.values())
    fig = Figure(figsize=(7, 1.2 + 0.32 * rows + 0.4 * len(attributes)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(attributes), 1, sharex=True,
                                      height_ratios=[max(1, len(subgroups[a])) for a in attributes]))
    for ax, attribute in zip(axes, attributes):
        groups = subgroups[attribute]
        names = list(groups)
        for y, name in enumerate(names):
            entry = groups[name]
            if entry["too_small"] or entry["auc"] is None:
                ax.text(0.51, y, "too small to score" if entry["too_small"] else "n/a", va="center", fontsize=7)
                continue
            interval = (entry.get("intervals") or {}).get("auc")
            if interval:
                ax.plot(interval, [y, y], color="#1f77b4", lw=2, alpha=0.6)
            ax.plot([entry["auc"]], [y], "o", color="#1f77b4")
            ax.text(entry["auc"], y - 0.3, f"{entry['auc']:.3f}", ha="center", fontsize=7)
        if overall is not None:
            ax.axvline(overall, color="#444444", lw=0.9, ls="--")
        ax.set_yticks(range(len(names)), [f"{n} (n={groups[n]['n_images']})" for n in names], fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.7)
        ax.set_ylabel(attribute, fontsize=9)
        ax.set_xlim(0.5, 1.0)
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("mean ROC AUC over classes" + (" (dashed: all images)" if overall is not None else "")
                        + "; bars: bootstrap interval", fontsize=9)
    fig.suptitle("Subgroups", fontsize=11)
    return fig


def write_plots(
    directory: str | Path,
    labels: np.ndarray,
    probs: np.ndarray,
    result: MetricResult,
    groups: Sequence[str] | None = None,
    train_positives: Sequence[float] | None = None,
) -> list[Path]:
    """Save the ROC, PR and per-class plots into `directory` under their `cxrlt.layout.PLOT_FILES` names (atomic)."""
    directory = Path(directory)
    classes = result.classes
    return [
        save_figure(directory / PLOT_FILES["roc"], roc_figure(labels, probs, classes, groups)),
        save_figure(directory / PLOT_FILES["pr"], pr_figure(labels, probs, classes, groups)),
        save_figure(directory / PLOT_FILES["per_class"], metric_bars_figure(result, groups, train_positives)),
    ]
