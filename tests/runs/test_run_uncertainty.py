"""A finished run carries bootstrap intervals, calibration and reliability.png (the metrics.json contract)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxrlt.config import parse_config
from cxrlt.evaluation.bootstrap import bootstrap_metrics
from cxrlt.evaluation.calibration import expected_calibration_error, fit_temperature
from cxrlt.evaluation.predictions import read_predictions
from cxrlt.training.data import load_run_data
from cxrlt.runs.train import train
from tiny_runs import tiny_config


@pytest.mark.slow
def test_run_reports_intervals_and_calibration(tmp_path_factory):
    raw = tiny_config(tmp_path_factory.mktemp("synthetic"), epochs=1)
    raw["evaluation"] = {"bootstrap": 120, "temperature": True}
    config = parse_config(raw)
    run = train(config, tmp_path_factory.mktemp("runs") / "run", progress=False).run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    classes = list(metrics["per_class"])
    groups = [metrics["per_class"][c]["group"] for c in classes]
    data = load_run_data(config)
    test, val = data.part("test"), data.part("val")
    probs = read_predictions(run / "predictions.csv").values
    val_probs = read_predictions(run / "predictions_val.csv").values

    # the synthetic source has patient ids: whole patients are resampled,
    # with the run's seed, so the library call reproduces the intervals
    intervals = metrics["intervals"]
    assert intervals["unit"] == "patient" and intervals["resamples"] == 120 and intervals["level"] == 0.95
    expected = bootstrap_metrics(test.labels, probs, classes, resamples=120,
                                 patients=test.meta["patient_id"].to_numpy(), seed=config.train.seed)
    assert intervals == json.loads(json.dumps(expected.to_dict(groups)))

    calibration = metrics["calibration"]
    assert calibration["ece"] == pytest.approx(dict(zip(classes, expected_calibration_error(test.labels, probs))),
                                               abs=1e-6)
    assert calibration["temperature"] == pytest.approx(fit_temperature(val.labels, val_probs), rel=1e-5)
    assert json.loads((run / "model.json").read_text())["temperature"] == calibration["temperature"]
    assert calibration["scaled"]["pooled_ece"] is not None

    # thresholds tuned on validation (max F1 by default), their sensitivity / specificity on test
    thresholds = metrics["thresholds"]
    assert thresholds["method"] == "max_f1" and thresholds["tuned_on"] == "val"
    first = thresholds["per_class"][classes[0]]
    known = ~np.isnan(test.labels[:, 0])
    # the run scored float32 probabilities; the CSV holds each in its shortest float32 form
    hits = probs[known, 0].astype(np.float32) >= first["threshold"]
    assert first["sensitivity"] == pytest.approx(hits[test.labels[known, 0] == 1].mean())

    val_metrics = json.loads((run / "metrics_val.json").read_text())
    assert "intervals" not in val_metrics and val_metrics["calibration"]["temperature"] == calibration["temperature"]
    assert (run / "plots" / "reliability.png").stat().st_size > 10_000
    report = (run / "report.md").read_text()
    assert "bootstrap intervals (120 resamples of patients)" in report and "pooled ECE" in report
    assert np.isfinite(probs).all()
