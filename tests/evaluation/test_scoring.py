"""The scoring core: its numbers against scikit-learn, and one metrics.json schema for every producer.

Producers: training (`cxrlt.runs.finish`, a fold's run), `cxrlt evaluate` on
that run's saved predictions and labels, k-fold (out-of-fold and merged
test) and `cxrlt ensemble --labels`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrlt.cli import main
from cxrlt.config import load_config, parse_config
from cxrlt.evaluation.calibration import calibration_summary
from cxrlt.evaluation.metrics import tune_thresholds
from cxrlt.evaluation.predictions import read_label_csv, read_predictions, write_predictions
from cxrlt.evaluation.scoring import SECTIONS, BootstrapSettings, Tuning, score_predictions
from cxrlt.layout import EnsembleFiles, KFoldFiles
from cxrlt.runs.kfold import kfold
from tiny_runs import tiny

NAN = np.nan
# 10 images x 3 classes: A has ties across the labels, B two missing labels, C no positive (undefined)
LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, NAN, 0], [1, 0, 0], [0, 1, 0],
                   [0, 0, 0], [1, NAN, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=float)
PROBS = np.array([[.9, .2, .1], [.7, .8, .3], [.7, .9, .2], [.6, .3, .6], [.4, .35, .1],
                  [.4, .1, .05], [.3, .4, .7], [.2, .7, .2], [.1, .05, .1], [.5, .6, .4]])
CLASSES = ["A", "B", "C"]
THRESHOLDS = [0.5, 0.35, 0.2]


def test_the_core_matches_sklearn_on_a_hand_built_case():
    scores = score_predictions(
        LABELS, PROBS, CLASSES, split="test", groups=["head", "medium", "tail"], thresholds=THRESHOLDS,
        tuning=Tuning("sensitivity", "val", 0.8), temperature=2.0, patients=[f"p{i // 2}" for i in range(10)],
        bootstrap=BootstrapSettings(40, seed=5, level=0.9), extras={"tta": {"views": ["hflip"]}})
    report = scores.metrics
    assert list(report) == ["split", "n_images", "per_class", "mean", "groups", "tta", "intervals", "calibration",
                            "thresholds"]
    assert (report["split"], report["n_images"]) == ("test", 10)
    for j, name in enumerate(CLASSES[:2]):
        known = ~np.isnan(LABELS[:, j])
        y, p = LABELS[known, j], PROBS[known, j]
        entry = report["per_class"][name]
        assert set(entry) == {"auc", "ap", "f1", "f1_tuned", "threshold", "positives", "negatives", "group"}
        assert entry["auc"] == pytest.approx(roc_auc_score(y, p))
        assert entry["ap"] == pytest.approx(average_precision_score(y, p))
        assert entry["f1"] == pytest.approx(f1_score(y, p >= 0.5))
        assert entry["f1_tuned"] == pytest.approx(f1_score(y, p >= THRESHOLDS[j]))
        assert (entry["positives"], entry["negatives"]) == (int(y.sum()), int((1 - y).sum()))
    # B by hand: known rows 0,1,3,4,5,7,8,9; at 0.35 it predicts 1,4,7,9 -> TP 3 (1,4,7), FP 1 (9), FN 0
    assert report["per_class"]["B"]["f1_tuned"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 0))
    assert report["thresholds"]["per_class"]["B"] == {"threshold": 0.35, "sensitivity": 1.0, "specificity": 0.8}
    assert report["thresholds"]["method"] == "sensitivity" and report["thresholds"]["target_sensitivity"] == 0.8
    # C has no positive: no AUC / AP, left out of the means, and said so
    assert report["per_class"]["C"]["auc"] is None and report["mean"]["evaluated"] == 2
    assert report["mean"]["auc"] == pytest.approx(np.mean([report["per_class"][c]["auc"] for c in "AB"]))
    assert len(scores.warnings) == 1 and "C (no positive)" in scores.warnings[0]
    intervals = report["intervals"]
    assert (intervals["unit"], intervals["resamples"], intervals["seed"], intervals["level"]) == ("patient", 40, 5, 0.9)
    assert report["calibration"] == calibration_summary(LABELS, PROBS, CLASSES, temperature=2.0)
    assert "scaled" in report["calibration"] and report["groups"]["tail"]["classes"] == 1
    assert "A" in scores.table and "mean (2 of 3)" in scores.table


def test_without_options_the_report_keeps_its_required_sections():
    report = score_predictions(LABELS[:, :2], PROBS[:, :2], CLASSES[:2], split=None).metrics
    assert set(report) == {"split", "n_images", "per_class", "mean", "calibration"}
    assert set(report["per_class"]["A"]) == {"auc", "ap", "f1", "positives", "negatives"}


def test_the_core_refuses_what_would_break_the_schema():
    with pytest.raises(ValueError, match="go together"):
        score_predictions(LABELS, PROBS, CLASSES, split="test", thresholds=THRESHOLDS)
    with pytest.raises(ValueError, match="may not replace the report's own: mean"):
        score_predictions(LABELS, PROBS, CLASSES, split="test", extras={"mean": 1})


# --------------------------------------------------------------- every producer
@pytest.fixture(scope="module")
def kfold_dir(tmp_path_factory) -> Path:
    """A 2-fold run of 300 synthetic films at 32 px, one optimiser step per fold, 20 bootstrap resamples."""
    root = tmp_path_factory.mktemp("scoring")
    raw = tiny(root / "films", epochs=1, limit_train_batches=1)
    raw["evaluation"]["bootstrap"] = 20
    kfold(parse_config(raw), root / "kf", folds=2, progress=False)
    return root / "kf"


def _near(value):
    """Equal up to float32 rounding (a saved prediction table is read back as float64)."""
    return pytest.approx(value, rel=1e-6) if isinstance(value, float) else value


def _keys(report: dict) -> dict:
    """The key sets a consumer of metrics.json relies on."""
    first = next(iter(report["per_class"].values()))
    return {"per_class": set(first), "mean": set(report["mean"]), "groups": set(report["groups"]),
            "intervals": set(report["intervals"]), "calibration": set(report["calibration"]),
            "thresholds": set(report["thresholds"]) - {"target_sensitivity"}}


@pytest.mark.slow
def test_every_producer_writes_one_schema(kfold_dir, tmp_path, capsys):
    files = KFoldFiles(kfold_dir)
    run = files.fold(0)  # an ordinary run (`cxrlt.runs.train.train`), evaluated on test
    training = json.loads(run.headline_metrics.read_text())

    evaluated = tmp_path / "evaluate.json"
    assert main(["evaluate", "--predictions", str(run.predictions("test", "test")),
                 "--labels", str(run.labels("test", "test")), "--val-predictions", str(run.predictions("val", "test")),
                 "--val-labels", str(run.labels("val", "test")), "--bootstrap", "20", "--split", "test",
                 "--json", str(evaluated), "--no-progress"]) == 0
    evaluation = json.loads(evaluated.read_text())

    # A second member: another model's predictions of the same images (the k-fold's, squared).
    oof, test = read_predictions(files.oof_predictions), read_predictions(files.predictions)
    other_val = write_predictions(tmp_path / "b_val.csv", oof.ids, oof.classes, oof.values ** 2)
    other = write_predictions(tmp_path / "b_test.csv", test.ids, test.classes, test.values ** 2)
    out = tmp_path / "ensemble.csv"
    assert main(["ensemble", str(kfold_dir), str(other), "--val", str(other_val), "--labels", str(files.labels),
                 "--bootstrap", "20", "--out", str(out), "--no-progress"]) == 0
    assert "thresholds tuned on val" in capsys.readouterr().out
    ensemble = json.loads(EnsembleFiles(out).metrics.read_text())

    reports = {"training": (training, set()), "evaluate": (evaluation, set()),
               "k-fold test": (json.loads(files.metrics.read_text()), {"folds", "merge"}),
               "k-fold out-of-fold": (json.loads(files.oof_metrics.read_text()), set()),
               "ensemble": (ensemble, {"ensemble"})}
    for name, (report, extras) in reports.items():
        assert set(report) == set(SECTIONS) | extras, name
        assert _keys(report) == _keys(training), name

    # `cxrlt evaluate` on the run's saved files gives the run's own scores
    for name, entry in training["per_class"].items():
        assert evaluation["per_class"][name] == {key: _near(value) for key, value in entry.items()}, name
    assert evaluation["mean"] == {key: _near(value) for key, value in training["mean"].items()}

    # the ensemble's thresholds are tuned on the members' validation predictions, ensembled alike
    oof_labels = read_label_csv(files.oof_labels)
    assert list(oof_labels.ids) == list(oof.ids)
    expected = tune_thresholds(oof_labels.values, (oof.values + oof.values ** 2) / 2)
    assert [ensemble["per_class"][c]["threshold"] for c in oof.classes] == pytest.approx(expected.tolist())
    assert ensemble["ensemble"] == {"method": "mean", "members": [str(kfold_dir), str(other)]}


@pytest.mark.slow
def test_kfold_reports_have_calibration_intervals_and_out_of_fold_thresholds(kfold_dir):
    files = KFoldFiles(kfold_dir)
    config = load_config(files.config)
    oof, test = read_predictions(files.oof_predictions), read_predictions(files.predictions)
    oof_labels, test_labels = read_label_csv(files.oof_labels), read_label_csv(files.labels)
    assert list(test_labels.ids) == list(test.ids)
    report = json.loads(files.metrics.read_text())
    _same_calibration(report["calibration"], calibration_summary(test_labels.values, test.values, test.classes))
    intervals = report["intervals"]
    assert (intervals["resamples"], intervals["seed"], intervals["unit"]) == (20, config.train.seed, "patient")
    thresholds = tune_thresholds(oof_labels.values, oof.values)
    assert report["thresholds"]["tuned_on"] == "out-of-fold"
    assert [report["thresholds"]["per_class"][c]["threshold"] for c in test.classes] == pytest.approx(
        thresholds.tolist())
    assert (report["folds"], report["merge"], report["split"], report["n_images"]) == (2, "arithmetic", "test",
                                                                                       len(test))
    out_of_fold = json.loads(files.oof_metrics.read_text())
    assert out_of_fold["split"] == "out-of-fold" and out_of_fold["n_images"] == len(oof)
    _same_calibration(out_of_fold["calibration"], calibration_summary(oof_labels.values, oof.values, oof.classes))


def _same_calibration(report: dict, expected: dict) -> None:
    assert report["temperature"] is None and report["bins"] == expected["bins"]
    assert report["ece"] == pytest.approx(expected["ece"])
    assert (report["pooled_ece"], report["mean_ece"]) == pytest.approx((expected["pooled_ece"], expected["mean_ece"]))
