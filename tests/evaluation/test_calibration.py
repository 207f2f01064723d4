"""Calibration: ECE by hand, reliability bins, temperature scaling against a direct minimisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from cxrlt.evaluation.calibration import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    logits,
    reliability,
    write_reliability_plot,
)


def test_ece_hand_made_case():
    # 10 bins: 0.1 -> bin 1 (freq 1/2, gap 0.4), 0.3 -> bin 3 (freq 0, gap 0.3),
    # 0.9 and 1.0 -> bin 9 (mean 0.95, freq 1, gap 0.05); the NaN label is left out
    p = np.array([0.1, 0.1, 0.3, 0.3, 0.9, 1.0, 0.5])
    y = np.array([0, 1, 0, 0, 1, 1, np.nan])
    expected = (2 * 0.4 + 2 * 0.3 + 2 * 0.05) / 6
    assert expected_calibration_error(y, p, bins=10)[0] == pytest.approx(expected, abs=1e-12)
    curve = reliability(y, p, bins=10)
    assert curve.count.tolist() == [0, 2, 0, 2, 0, 0, 0, 0, 0, 2]
    assert curve.frequency[1] == 0.5 and curve.confidence[9] == pytest.approx(0.95)
    assert np.isnan(curve.frequency[0])


def test_pooled_and_per_class_ece():
    p = np.array([[0.1, 0.8], [0.1, 0.8], [0.7, 0.2], [0.7, 0.2]])
    y = np.array([[0, 1], [0, 1], [1, 0], [0, np.nan]])
    per_class = expected_calibration_error(y, p, bins=5)
    # class 0: bin 0 gap 0.1 (2 pairs), bin 3 freq 1/2 vs 0.7 gap 0.2 (2 pairs) -> 0.15
    # class 1: bin 4 freq 1 vs 0.8 gap 0.2 (2), bin 1 freq 0 vs 0.2 gap 0.2 (1) -> 0.2
    assert per_class == pytest.approx([0.15, 0.2])
    summary = calibration_summary(y, p, ["a", "b"], bins=5)
    # pooled bins: 0 {0.1,0.1}: gap .1; 1 {0.2}: gap .2; 3 {0.7,0.7}: gap .2; 4 {0.8,0.8}: gap .2
    assert summary["pooled_ece"] == pytest.approx((2 * 0.1 + 0.2 + 2 * 0.2 + 2 * 0.2) / 7)
    assert summary["mean_ece"] == pytest.approx(0.175)
    assert summary["ece"] == pytest.approx({"a": 0.15, "b": 0.2})
    assert summary["temperature"] is None and "scaled" not in summary


def test_perfectly_calibrated_bins_have_zero_ece():
    p = np.repeat([0.25, 0.75], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, p, bins=4)[0] == pytest.approx(0.0)


def test_temperature_recovers_over_confidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(40_000, 2))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    y[rng.random(z.shape) < 0.1] = np.nan
    over_confident = 1 / (1 + np.exp(-2.0 * z))  # true temperature 2
    t = fit_temperature(y, over_confident)
    assert t == pytest.approx(2.0, abs=0.06)

    # the same optimum as minimising the masked BCE directly
    known = ~np.isnan(y)
    zz, yy = logits(over_confident)[known], y[known]

    def nll(temperature: float) -> float:
        q = np.clip(1 / (1 + np.exp(-zz / temperature)), 1e-300, 1 - 1e-16)
        return -float(np.sum(yy * np.log(q) + (1 - yy) * np.log1p(-q)))

    direct = minimize_scalar(nll, bounds=(0.5, 5), method="bounded", options={"xatol": 1e-9}).x
    assert t == pytest.approx(direct, abs=1e-5)
    before = expected_calibration_error(y, over_confident).mean()
    after = expected_calibration_error(y, apply_temperature(over_confident, t)).mean()
    assert after < before / 3


def test_apply_temperature_is_monotone_and_identity_at_one():
    p = np.array([0.0, 0.01, 0.3, 0.5, 0.9, 1.0])
    assert np.allclose(apply_temperature(p, 1.0), np.clip(p, 1e-7, 1 - 1e-7))
    softened = apply_temperature(p, 3.0)
    assert np.all(np.diff(softened) > 0) and softened[3] == pytest.approx(0.5)
    assert softened[1] > p[1] and softened[4] < p[4]
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(p, 0.0)


def test_summary_with_temperature_and_plot(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(2000, 3))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    p = 1 / (1 + np.exp(-3 * z))
    t = fit_temperature(y, p)
    summary = calibration_summary(y, p, ["a", "b", "c"], temperature=t)
    assert summary["temperature"] == t
    assert summary["scaled"]["pooled_ece"] < summary["pooled_ece"]
    assert sum(summary["reliability"]["count"]) == y.size
    path = write_reliability_plot(tmp_path / "reliability.png", y, p, ["head", "medium", "tail"], temperature=t)
    assert path.stat().st_size > 10_000


def test_bad_inputs():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        expected_calibration_error(np.array([2.0]), np.array([0.5]))
    with pytest.raises(ValueError, match="one shape"):
        reliability(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no known label"):
        fit_temperature(np.array([np.nan]), np.array([0.5]))


def test_operating_points_by_hand():
    from cxrlt.evaluation.calibration import operating_points

    y = np.array([[1, 0], [1, np.nan], [0, 0], [0, 0], [1, 0]])
    p = np.array([[0.9, 0.2], [0.4, 0.9], [0.6, 0.1], [0.2, 0.5], [0.5, 0.05]])
    points = operating_points(y, p, [0.5, 0.5], ["a", "b"])
    # a: positives 0.9, 0.4, 0.5 -> 2 of 3 at >= 0.5; negatives 0.6, 0.2 -> 1 of 2 below
    assert points["a"] == {"threshold": 0.5, "sensitivity": pytest.approx(2 / 3), "specificity": 0.5}
    # b: no positive; negatives 0.2, 0.1, 0.5, 0.05 -> 3 of 4 below (the NaN row is left out)
    assert points["b"] == {"threshold": 0.5, "sensitivity": None, "specificity": 0.75}
