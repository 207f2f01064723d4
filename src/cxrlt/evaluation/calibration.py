"""Calibration of predicted probabilities: ECE, reliability curves, temperature scaling.

Expected calibration error (ECE) with B equal-width bins: the interval
[0, 1] is cut into B bins of width 1/B (bin b holds probabilities in
[b/B, (b+1)/B), the last bin also holds 1). Over the n (image, class) pairs
whose label is known,

    ECE = sum_b (n_b / n) * | mean(y in b) - mean(p in b) |,

the gap between observed frequency and mean predicted probability in each
bin, weighted by the share of pairs in the bin; empty bins count zero.
Per-class ECE uses one class's known labels; the pooled ECE pools every
known (image, class) pair of all classes into one set; the mean ECE is the
plain mean of the per-class values over classes with at least one known
label. Missing labels (NaN) are left out everywhere.

Temperature scaling (one T shared by all classes) rescales logits:
p_T = sigmoid(logit(p) / T). T is fitted on validation by minimising the
binary cross-entropy of the known labels (the negative log-likelihood of a
Bernoulli model), which is convex in 1/T; T > 1 softens over-confident
predictions. Logits come from the prediction table: logit(p) with p
clipped to [1e-7, 1 - 1e-7], since a stored probability may round to 0 or 1.
Scaling is monotone, so it changes neither AUC nor AP.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlt.io import save_figure

DEFAULT_BINS = 15
_EPS = 1e-7
_T_RANGE = (1e-2, 1e2)


@dataclass(frozen=True)
class Reliability:
    """Per-bin counts, mean predicted probability and observed frequency (NaN for empty bins)."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error of the binned pairs (NaN when there are none)."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        used = self.count > 0
        gaps = np.abs(self.frequency[used] - self.confidence[used])
        return float(np.dot(self.count[used], gaps) / total)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: `edges`, `count`, `confidence`, `frequency` (null for empty bins)."""
        return {
            "edges": [float(e) for e in self.edges],
            "count": [int(c) for c in self.count],
            "confidence": [float(v) if np.isfinite(v) else None for v in self.confidence],
            "frequency": [float(v) if np.isfinite(v) else None for v in self.frequency],
        }


def _check(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must have one shape")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probabilities must be numbers in [0, 1]")
    known = y[~np.isnan(y)]
    if known.size and not np.all((known == 0) | (known == 1)):
        raise ValueError("labels must be 0, 1 or NaN (missing)")
    return y, p


def reliability(labels: Any, probs: Any, bins: int = DEFAULT_BINS) -> Reliability:
    """Reliability curve of all known (image, class) pairs of `labels` / `probs` pooled.

    Any shape works (one class, or images x classes); NaN labels are left out.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    y, p = _check(labels, probs)
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        confidence = np.bincount(index, weights=p, minlength=bins) / count
        frequency = np.bincount(index, weights=y, minlength=bins) / count
    return Reliability(np.linspace(0.0, 1.0, bins + 1), count, confidence, frequency)


def expected_calibration_error(labels: Any, probs: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Per-class ECE of (images x classes) inputs; NaN for a class with no known label."""
    y, p = _check(labels, probs)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    return np.array([reliability(y[:, k], p[:, k], bins).ece for k in range(y.shape[1])])


# ------------------------------------------------------------------ temperature
def logits(probs: Any) -> np.ndarray:
    """logit(p), with p clipped to [1e-7, 1 - 1e-7] so stored 0 / 1 stay finite."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T): probabilities rescaled by temperature T."""
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    z = logits(probs) / temperature
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow


def _nll_gradient(a: float, z: np.ndarray, y: np.ndarray) -> float:
    """d/da of the summed BCE of sigmoid(a z) against y (increasing in a: the loss is convex)."""
    return float(np.dot(0.5 * (1.0 + np.tanh(0.5 * a * z)) - y, z))


def fit_temperature(labels: Any, probs: Any) -> float:
    """The temperature minimising the masked BCE of `sigmoid(logit(probs) / T)` on `labels`.

    One T for all classes (NaN labels left out). The optimum over a = 1/T is
    the root of the loss's derivative, increasing in a, found by Brent's
    method to 1e-10. Kept in [0.01, 100] (with a warning at the bound,
    e.g. for perfectly separated labels).
    """
    from scipy.optimize import brentq

    y, p = _check(labels, probs)
    known = ~np.isnan(y)
    y, z = y[known], logits(p[known])
    if not len(y):
        raise ValueError("no known label to fit a temperature on")
    lo, hi = 1 / _T_RANGE[1], 1 / _T_RANGE[0]
    g_lo, g_hi = _nll_gradient(lo, z, y), _nll_gradient(hi, z, y)
    if g_lo >= 0 or g_hi <= 0:
        bound = _T_RANGE[1] if g_lo >= 0 else _T_RANGE[0]
        warnings.warn(f"the fitted temperature reached its bound {bound:g}; the validation labels "
                      "may be (almost) perfectly separated or uninformative", stacklevel=2)
        return float(bound)
    a = brentq(_nll_gradient, lo, hi, args=(z, y), xtol=1e-12, rtol=1e-12)
    return float(1.0 / a)


# ---------------------------------------------------------------------- summary
def calibration_summary(
    labels: Any,
    probs: Any,
    classes: Sequence[str],
    bins: int = DEFAULT_BINS,
    temperature: float | None = None,
) -> dict[str, Any]:
    """The `calibration` section of metrics.json.

    `{"bins", "ece": {class: v}, "mean_ece", "pooled_ece", "temperature", "reliability"}` for the
    probabilities as given (`reliability`: the pooled curve), and with a
    `temperature` also `"scaled": {"ece", "mean_ece", "pooled_ece", "reliability"}` for
    `apply_temperature(probs, temperature)`. Undefined values are None.
    """
    y, p = _check(labels, probs)

    def block(q: np.ndarray) -> dict[str, Any]:
        per_class = expected_calibration_error(y, q, bins)
        pooled = reliability(y, q, bins)
        finite = per_class[np.isfinite(per_class)]
        return {
            "ece": {str(c): (float(v) if np.isfinite(v) else None) for c, v in zip(classes, per_class)},
            "mean_ece": float(finite.mean()) if len(finite) else None,
            "pooled_ece": pooled.ece if pooled.count.sum() else None,
            "reliability": pooled.to_dict(),
        }

    out: dict[str, Any] = {"bins": int(bins), **block(p), "temperature": temperature}
    if temperature is not None:
        out["scaled"] = block(apply_temperature(p, temperature))
    return out


# -------------------------------------------------------------- operating points
def operating_points(labels: Any, probs: Any, thresholds: Sequence[float], classes: Sequence[str]) -> dict[str, Any]:
    """Sensitivity and specificity of each class at its decision threshold (score >= threshold).

    `{class: {"threshold", "sensitivity", "specificity"}}`, None where the
    class has no known positive (sensitivity) or negative (specificity);
    NaN labels are left out. Shows how a threshold tuned on validation (for
    example for a target sensitivity) behaves on the evaluated set.
    """
    y, p = _check(labels, probs)
    t = np.asarray(thresholds, dtype=np.float64)
    if y.ndim != 2 or t.shape != (y.shape[1],) or len(classes) != y.shape[1]:
        raise ValueError(f"{t.shape} thresholds and {len(classes)} classes for {y.shape} labels")
    predicted = p >= t
    positive, negative = y == 1, y == 0
    p_count, n_count = positive.sum(axis=0), negative.sum(axis=0)
    tp, tn = (predicted & positive).sum(axis=0), (~predicted & negative).sum(axis=0)
    return {
        str(name): {
            "threshold": float(t[j]),
            "sensitivity": float(tp[j] / p_count[j]) if p_count[j] else None,
            "specificity": float(tn[j] / n_count[j]) if n_count[j] else None,
        }
        for j, name in enumerate(classes)
    }


# ------------------------------------------------------------------------- plot
def reliability_figure(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
    temperature: float | None = None,
) -> Any:
    """Reliability diagram: observed frequency against mean predicted probability.

    Left: all known (image, class) pairs pooled (and, with `temperature`, the
    same after scaling), with the diagonal of perfect calibration and the
    pooled ECE in the legend. With `groups`, the head / medium / tail curves
    too. Below: how many pairs fall into each bin (log scale), since nearly
    all of them sit in the lowest bins for rare findings.
    """
    from matplotlib.figure import Figure

    from cxrlt.data.stats import GROUP_COLOURS

    y, p = _check(labels, probs)
    fig = Figure(figsize=(6.2, 6.4), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="#999999", label="perfect calibration")
    curves = [("all classes", reliability(y, p, bins), "#333333", "-")]
    if temperature is not None:
        curves.append((f"all classes, T = {temperature:.3g}", reliability(y, apply_temperature(p, temperature), bins),
                       "#009E73", "-"))
    if groups is not None:
        names = np.asarray([str(g) for g in groups])
        for name, colour in GROUP_COLOURS.items():
            members = names == name
            if members.any():
                curves.append((name, reliability(y[:, members], p[:, members], bins), colour, ":"))
    centres = (np.arange(bins) + 0.5) / bins
    for label, curve, colour, style in curves:
        used = curve.count > 0
        ax.plot(curve.confidence[used], curve.frequency[used], marker="o", ms=3.5, lw=1.3, ls=style, color=colour,
                label=f"{label} (ECE {curve.ece:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency of positives")
    ax.set_title(f"Reliability diagram ({bins} equal-width bins, known labels pooled)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    pooled = curves[0][1]
    ax_count.bar(centres, np.maximum(pooled.count, 0), width=0.9 / bins, color="#777777", log=True)
    ax_count.set(xlabel="mean predicted probability", ylabel="pairs per bin")
    ax_count.grid(alpha=0.3, axis="y")
    return fig


def write_reliability_plot(
    path: str | Path,
    labels: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
    temperature: float | None = None,
) -> Path:
    """Save the reliability diagram (PNG) atomically."""
    return save_figure(path, reliability_figure(labels, probs, groups, bins, temperature))
