import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrlt.evaluation.metrics import (
    UndefinedMetricWarning,
    average_precision,
    compute_metrics,
    f1_scores,
    pr_curve,
    roc_auc,
    roc_curve,
    tune_thresholds,
)
from cxrlt.io import write_json


def random_case(seed, n, c, ties, missing=0.1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.05, 0.6, c)).astype(float)
    p = rng.random((n, c)) * 0.6 + 0.4 * y
    if ties:
        p = np.round(p, 1)
    y[rng.random((n, c)) < missing] = np.nan
    return y, p.astype(dtype)


def sklearn_reference(y, p, thresholds):
    out = []
    for j in range(y.shape[1]):
        known = ~np.isnan(y[:, j])
        yj, pj = y[known, j], p[known, j]
        both = 0 < yj.sum() < len(yj)
        out.append([
            roc_auc_score(yj, pj) if both else np.nan,
            average_precision_score(yj, pj) if both else np.nan,
            f1_score(yj, pj >= 0.5, zero_division=np.nan),
            f1_score(yj, pj >= thresholds[j], zero_division=np.nan),
        ])
    return np.array(out).T


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,c", [(9, 3), (200, 5), (3000, 4)])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equals_sklearn_on_random_inputs_with_missing_labels(seed, n, c, ties, dtype):
    y, p = random_case(seed, n, c, ties, dtype=dtype)
    thresholds = np.random.default_rng(seed + 10).uniform(0.2, 0.8, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = compute_metrics(y, p, thresholds=thresholds)
    auc, ap, f1, f1_tuned = sklearn_reference(y, p, thresholds)
    np.testing.assert_allclose(result.auc, auc, atol=1e-9)
    np.testing.assert_allclose(result.ap, ap, atol=1e-9)
    np.testing.assert_allclose(result.f1, f1, atol=1e-12)
    np.testing.assert_allclose(result.f1_tuned, f1_tuned, atol=1e-12)
    np.testing.assert_array_equal(result.positives, np.nansum(y == 1, axis=0))
    np.testing.assert_array_equal(result.negatives, np.sum(y == 0, axis=0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40).filter(
        lambda rows: 0 < sum(r[0] for r in rows) < len(rows)
    )
)
def test_equals_sklearn_on_heavily_tied_scores(rows):
    y = np.array([r[0] for r in rows], dtype=float)
    p = np.array([r[1] for r in rows], dtype=float) / 6
    assert roc_auc(y, p)[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p)[0] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert f1_scores(y, p, 0.5)[0] == pytest.approx(f1_score(y, p >= 0.5, zero_division=np.nan), abs=1e-12)


def test_hand_computed_auc_and_ap_with_a_tie():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.8, 0.1])
    # pairs: (0.9 > 0.8, 0.9 > 0.1, 0.8 = 0.8 -> 1/2, 0.8 > 0.1) = 3.5 of 4
    assert roc_auc(y, p)[0] == pytest.approx(0.875)
    # recall 1/2 at precision 1, then recall 1 at precision 2/3
    assert average_precision(y, p)[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # at 0.8: TP 2, FP 1, FN 0 -> 4 / 5
    assert f1_scores(y, p, 0.8)[0] == pytest.approx(0.8)


def test_constant_scores():
    y = np.array([1, 0, 0, 1, 0], dtype=float)
    p = np.full(5, 0.3)
    assert roc_auc(y, p)[0] == pytest.approx(0.5)
    assert average_precision(y, p)[0] == pytest.approx(average_precision_score(y, p)) == pytest.approx(0.4)
    assert f1_scores(y, p)[0] == 0.0
    assert f1_scores(y, p, 0.3)[0] == pytest.approx(f1_score(y, p >= 0.3))


def test_undefined_classes_are_nan_warned_and_left_out_of_means():
    y = np.array([[1, 0, 1, np.nan], [0, 0, 1, 1], [1, 0, 1, np.nan], [0, 0, 1, np.nan]], dtype=float)
    p = np.array([[0.9, 0.6, 0.2, 0.5], [0.1, 0.2, 0.7, 0.4], [0.8, 0.1, 0.4, 0.3], [0.3, 0.3, 0.9, 0.2]])
    with pytest.warns(UndefinedMetricWarning, match=r"b \(no positive\), c \(no negative\), d \(no negative\)"):
        result = compute_metrics(y, p, ["a", "b", "c", "d"])
    assert result.auc[0] == 1.0 and result.ap[0] == 1.0
    assert np.isnan(result.auc[1:]).all() and np.isnan(result.ap[1:]).all()
    # F1 stays sklearn's value: 0 when the class has no positive but predicts one ...
    assert result.f1[1] == f1_score(y[:, 1], p[:, 1] >= 0.5) == 0.0
    # ... and is defined for a class without negatives (TP 2 of 4)
    assert result.f1[2] == pytest.approx(f1_score(y[:, 2], p[:, 2] >= 0.5))
    assert result.undefined_classes == ["b", "c", "d"]
    mean = result.summary()["mean"]
    assert mean == {"auc": 1.0, "ap": 1.0, "f1": result.f1[0], "classes": 4, "evaluated": 1}


def test_single_image_and_all_missing_class():
    with pytest.warns(UndefinedMetricWarning):
        result = compute_metrics(np.array([[1.0, np.nan]]), np.array([[0.7, 0.1]]))
    assert np.isnan(result.auc).all() and np.isnan(result.ap).all()
    assert result.f1[0] == 1.0 and np.isnan(result.f1[1])
    assert result.summary()["mean"]["auc"] is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="finite"):
        roc_auc([1, 0], [np.nan, 0.2])
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        roc_auc([1, -1], [0.3, 0.2])
    with pytest.raises(ValueError, match="shape"):
        roc_auc(np.zeros((3, 2)), np.zeros((3, 3)))


def test_tune_max_f1_hand_case():
    y = np.array([1, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    # F1 at 0.9, 0.8, 0.7, 0.6, 0.3, 0.2 = 1/2, 4/5, 2/3, 6/7, 3/4, 2/3
    t = tune_thresholds(y, p)
    assert t[0] == 0.6
    assert f1_scores(y, p, t)[0] == pytest.approx(6 / 7)


def test_tune_max_f1_tie_takes_highest_threshold_and_masks_missing():
    # F1 at 0.9 = 2/3 and at 0.6 = 4/6: the higher threshold wins
    y = np.array([1, 0, 0, 1, np.nan])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    assert tune_thresholds(y, p)[0] == 0.9


def test_tune_sensitivity_hand_case():
    y = np.array([1, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    assert tune_thresholds(y, p, "sensitivity", 0.6)[0] == 0.8  # 2 of 3 positives
    assert tune_thresholds(y, p, "sensitivity", 2 / 3)[0] == 0.8  # exactly 2/3, no rounding slip
    assert tune_thresholds(y, p, "sensitivity", 0.9)[0] == 0.6
    assert tune_thresholds(y, p, "sensitivity", 1.0)[0] == 0.6


def test_tune_reaches_brute_force_maximum_on_random_data():
    y, p = random_case(5, 400, 6, ties=True)
    t = tune_thresholds(y, p)
    for j in range(6):
        known = ~np.isnan(y[:, j])
        best = max(f1_score(y[known, j], p[known, j] >= s) for s in np.unique(p[known, j]))
        assert f1_scores(y[:, j], p[:, j], t[j])[0] == pytest.approx(best)


def test_tune_falls_back_without_positives():
    y = np.array([[0, 1], [0, 0], [np.nan, 1]], dtype=float)
    p = np.array([[0.2, 0.9], [0.4, 0.1], [0.8, 0.7]])
    with pytest.warns(UndefinedMetricWarning, match="no positive validation label for 1 class.*: Hernia"):
        t = tune_thresholds(y, p, classes=["Hernia", "Mass"], fallback=0.5)
    assert t.tolist() == [0.5, 0.7]


def test_curves_match_counts():
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    fpr, tpr = roc_curve(y, p)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, p))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    recall, precision = pr_curve(y, p)
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5, 3 / 6])


def test_json_report_schema_and_group_means(tmp_path):
    y, p = random_case(3, 300, 6, ties=False, missing=0.0)
    y[:, 5] = 0  # no positive: null in the report
    thresholds = np.full(6, 0.4)
    groups = ["head", "head", "medium", "medium", "tail", "tail"]
    with pytest.warns(UndefinedMetricWarning):
        result = compute_metrics(y, p, list("abcdef"), thresholds=thresholds)
    report = result.to_dict(groups)
    assert set(report) == {"per_class", "mean", "groups"}
    assert list(report["per_class"]) == list("abcdef")
    entry = report["per_class"]["a"]
    assert set(entry) == {"auc", "ap", "f1", "f1_tuned", "threshold", "positives", "negatives", "group"}
    assert entry["auc"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert entry["positives"] == int(y[:, 0].sum()) and entry["group"] == "head"
    assert report["per_class"]["f"]["auc"] is None and report["per_class"]["f"]["ap"] is None
    assert list(report["groups"]) == ["head", "medium", "tail"]
    tail = report["groups"]["tail"]
    assert tail["classes"] == 2 and tail["evaluated"] == 1
    assert tail["auc"] == pytest.approx(roc_auc_score(y[:, 4], p[:, 4]))
    assert report["groups"]["head"]["ap"] == pytest.approx(
        np.mean([average_precision_score(y[:, j], p[:, j]) for j in (0, 1)])
    )
    assert report["mean"]["auc"] == pytest.approx(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(5)]))
    assert report["mean"]["f1_tuned"] == pytest.approx(np.mean([f1_score(y[:, j], p[:, j] >= 0.4) for j in range(5)]))
    write_json(tmp_path / "r.json", report)
    assert json.loads((tmp_path / "r.json").read_text()) == report

    plain = compute_metrics(y[:, :5], p[:, :5], list("abcde")).to_dict()
    assert set(plain) == {"per_class", "mean"}
    assert set(plain["per_class"]["a"]) == {"auc", "ap", "f1", "positives", "negatives"}


def test_text_table_lists_classes_and_means():
    y, p = random_case(4, 200, 3, ties=False, missing=0.0)
    y[:, 2] = 1
    with pytest.warns(UndefinedMetricWarning):
        result = compute_metrics(y, p, ["Atelectasis", "Hernia", "Calcification of the Aorta"])
    table = result.format_table(["head", "medium", "tail"], train_positives=[900, 50, 7])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "group", "train", "pos", "pos", "AUC", "AP", "F1@0.5"]
    assert lines[2].split()[:4] == ["Atelectasis", "head", "900", str(int(y[:, 0].sum()))]
    assert f"{result.auc[1]:.4f}" in lines[3]
    assert "n/a" in lines[4]
    assert any(line.startswith("mean (2 of 3)") and f"{np.mean(result.auc[:2]):.4f}" in line for line in lines)
    assert any(line.startswith("tail (0 of 1)") for line in lines)
