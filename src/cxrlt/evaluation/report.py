"""The Markdown report of a run and its training-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from cxrlt.io import save_figure, write_text


def _stage_logs(run_dir: Path) -> Iterator[tuple[int, str, pd.DataFrame]]:
    """(stage index, stage folder name, every logged row) for each stage with logs.

    Attempts in order: logs kept from before each resume, then the current
    one; for an epoch or step logged twice a later attempt's row comes later
    (the epoch was interrupted and re-run), so `.last()` picks it.
    """
    for index, logs in enumerate(sorted(Path(run_dir).glob("stages/*/logs"))):
        attempts = sorted(logs.glob("metrics-before-resume-*.csv"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        parts = [pd.read_csv(log) for log in [*attempts, logs / "metrics.csv"] if log.is_file()]
        if parts:
            yield index, logs.parent.name, pd.concat(parts, ignore_index=True)


def read_training_logs(run_dir: Path) -> pd.DataFrame:
    """Per-epoch training loss and validation metrics of every stage, in order."""
    frames = []
    for index, stage, frame in _stage_logs(run_dir):
        if "epoch" not in frame:
            continue
        columns = [c for c in ("train/loss_epoch", "val/map", "val/auc") if c in frame]
        per_epoch = frame.groupby("epoch")[columns].last().reset_index()
        per_epoch.insert(0, "stage", stage)
        per_epoch.insert(1, "stage_index", index)
        frames.append(per_epoch)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_learning_rates(run_dir: Path) -> pd.DataFrame:
    """The learning rate of every optimiser step, stages one after another: columns stage, stage_index, step, lr."""
    frames = []
    for index, stage, frame in _stage_logs(run_dir):
        columns = [c for c in frame.columns if c.startswith("lr-")]  # Lightning names it after the optimiser
        if not columns:
            continue
        rows = frame.dropna(subset=columns[:1])
        per_step = rows.groupby("step")[columns[0]].last().reset_index().rename(columns={columns[0]: "lr"})
        per_step.insert(0, "stage", stage)
        per_step.insert(1, "stage_index", index)
        frames.append(per_step)
    if not frames:
        return pd.DataFrame(columns=["stage", "stage_index", "step", "lr"])
    return pd.concat(frames, ignore_index=True)


def plot_training_curves(logs: pd.DataFrame, path: Path, rates: pd.DataFrame | None = None) -> Path | None:
    """Training loss and validation mAP / mean AUC per epoch, and the learning rate per step; stages one after another."""
    if logs.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show_lr = rates is not None and not rates.empty
    fig, axes = plt.subplots(1, 3 if show_lr else 2, figsize=(16 if show_lr else 11, 4))
    ax_loss, ax_val = axes[0], axes[1]
    x = np.arange(1, len(logs) + 1)
    if "train/loss_epoch" in logs:
        ax_loss.plot(x, logs["train/loss_epoch"], marker="o", color="#444444")
    ax_loss.set(title="training loss", xlabel="epoch (all stages)", ylabel="loss per image")
    for column, colour, label in (("val/map", "#c53030", "validation mAP"), ("val/auc", "#2b6cb0", "validation mean AUC")):
        if column in logs:
            ax_val.plot(x, logs[column], marker="o", color=colour, label=label)
    ax_val.set(title="validation", xlabel="epoch (all stages)", ylim=(0, 1))
    ax_val.legend(loc="lower right")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        for start in logs.index[logs["stage_index"].diff().fillna(0) > 0]:
            ax.axvline(start + 0.5, color="#999999", linestyle="--", linewidth=1)
    if show_lr:
        ax_lr = axes[2]
        steps = np.arange(1, len(rates) + 1)
        ax_lr.plot(steps, rates["lr"], color="#2f855a")
        ax_lr.set(title="learning rate", xlabel="optimiser step (all stages)", ylabel="learning rate")
        ax_lr.grid(alpha=0.3)
        for start in rates.index[rates["stage_index"].diff().fillna(0) > 0]:
            ax_lr.axvline(start + 0.5, color="#999999", linestyle="--", linewidth=1)
    return save_figure(path, fig)


def write_report(path: Path, title: str, config_summary: dict[str, Any], splits: dict[str, int],
                 table: str, summary: dict[str, Any], plots: Sequence[str], notes: Sequence[str] = ()) -> Path:
    """A Markdown report: setup, per-class table, group means (with bootstrap intervals and
    calibration when `summary` holds them), plots."""
    lines = [f"# {title}", "", "## Setup", ""]
    lines += [f"- **{key}**: {value}" for key, value in config_summary.items()]
    lines += ["- **images**: " + ", ".join(f"{name} {count}" for name, count in splits.items()), ""]
    lines += ["## Results", "", "```", table, "```", ""]
    mean = summary["mean"]
    intervals = summary.get("intervals") or {}

    def with_interval(value: float | None, section: dict[str, Any] | None, metric: str) -> str:
        return _fmt(value) + (f" {_span(section[metric])}" if section else "")

    lines.append(f"Mean AUC {with_interval(mean['auc'], intervals.get('mean'), 'auc')}, "
                 f"mAP {with_interval(mean['ap'], intervals.get('mean'), 'ap')}, mean F1 {_fmt(mean['f1'])} "
                 f"over {mean['evaluated']} of {mean['classes']} classes.")
    for name, group in summary.get("groups", {}).items():
        section = intervals.get("groups", {}).get(name)
        lines.append(f"- {name}: AUC {with_interval(group['auc'], section, 'auc')}, "
                     f"AP {with_interval(group['ap'], section, 'ap')} ({group['evaluated']} classes)")
    if intervals:
        lines += ["", f"In brackets: {intervals['level']:.0%} percentile bootstrap intervals "
                      f"({intervals['resamples']} resamples of {intervals['unit']}s)."]
    calibration = summary.get("calibration")
    if calibration:
        line = (f"Calibration ({calibration['bins']} equal-width bins): pooled ECE {_fmt(calibration['pooled_ece'])}, "
                f"mean per-class ECE {_fmt(calibration['mean_ece'])}")
        if calibration.get("temperature") is not None:
            scaled = calibration["scaled"]
            line += (f"; after temperature scaling (T = {calibration['temperature']:.3g}, fitted on validation) "
                     f"{_fmt(scaled['pooled_ece'])} / {_fmt(scaled['mean_ece'])}")
        lines += ["", line + "."]
    lines += [""] + [f"- {note}" for note in notes] + [""] if notes else [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return write_text(path, "\n".join(lines))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _span(interval: Sequence[float] | None) -> str:
    return "[n/a]" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"
