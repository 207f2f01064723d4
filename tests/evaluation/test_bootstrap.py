"""Bootstrap intervals: weighted metrics against sklearn, coverage, cluster and paired logic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrlt.evaluation import bootstrap as bs
from cxrlt.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap
from cxrlt.evaluation.metrics import average_precision, roc_auc


def _data(n=400, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.4, 0.1, 0.03, 0.2])
    y = (rng.random((n, 4)) < prevalence).astype(float)
    scores = 1 / (1 + np.exp(-rng.normal(-1 + 1.5 * y, 1.0)))
    if ties:
        scores = np.round(scores, 1)  # ~10 distinct scores: ties between positives and negatives
    y[rng.random((n, 4)) < 0.1] = np.nan
    return y, scores


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_metrics_equal_sklearn_sample_weight(ties, dtype):
    y, p = _data(ties=ties)
    layout = bs._layout(y, p, dtype)
    rng = np.random.default_rng(3)
    weights = bs._weights(rng, 6, None, len(y), dtype)
    auc, ap = bs._metrics_from_counts(layout, layout.counts(weights))
    for r in range(weights.shape[1]):
        for k in range(y.shape[1]):
            known = ~np.isnan(y[:, k])
            w = weights[known, r]
            assert auc[k, r] == pytest.approx(roc_auc_score(y[known, k], p[known, k], sample_weight=w), abs=1e-10)
            assert ap[k, r] == pytest.approx(
                average_precision_score(y[known, k], p[known, k], sample_weight=w), abs=1e-10)


def test_point_values_match_metrics_and_are_reproducible():
    y, p = _data()
    a = bootstrap_metrics(y, p, resamples=50, seed=7)
    np.testing.assert_array_equal(a.auc, roc_auc(y, p))
    np.testing.assert_allclose(a.ap, average_precision(y, p), rtol=0, atol=1e-14)
    b = bootstrap_metrics(y, p, resamples=50, seed=7)
    np.testing.assert_array_equal(a.auc_samples, b.auc_samples)
    assert not np.array_equal(a.auc_samples, bootstrap_metrics(y, p, resamples=50, seed=8).auc_samples)


def test_chunking_does_not_change_replicates(monkeypatch):
    y, p = _data()
    whole = bootstrap_metrics(y, p, resamples=40, seed=1)
    monkeypatch.setattr(bs, "_CHUNK", 3)
    chunked = bootstrap_metrics(y, p, resamples=40, seed=1)
    np.testing.assert_array_equal(whole.ap_samples, chunked.ap_samples)


def test_intervals_are_percentiles_of_the_replicates():
    y, p = _data()
    result = bootstrap_metrics(y, p, resamples=200, seed=0, classes=list("abcd"))
    report = result.to_dict(groups=["head", "medium", "tail", "head"])
    assert report["unit"] == "image" and report["resamples"] == 200 and report["level"] == 0.95
    assert report["per_class"]["b"]["ap"] == pytest.approx(np.percentile(result.ap_samples[:, 1], [2.5, 97.5]))
    # a mean's replicate: the point mean plus the mean change of the classes defined in that resample
    auc = result.auc.mean() + np.nanmean(result.auc_samples - result.auc, axis=1)
    assert report["mean"]["auc"] == pytest.approx(np.percentile(auc, [2.5, 97.5]))
    head = result.ap[[0, 3]].mean() + np.nanmean(result.ap_samples[:, [0, 3]] - result.ap[[0, 3]], axis=1)
    assert report["groups"]["head"]["ap"] == pytest.approx(np.percentile(head, [2.5, 97.5]))
    assert list(report["groups"]) == ["head", "medium", "tail"]
    lo, hi = report["per_class"]["a"]["auc"]
    assert lo < result.auc[0] < hi


def test_undefined_classes_and_resamples():
    rng = np.random.default_rng(0)
    n = 300
    y = np.zeros((n, 3))
    y[:150, 0] = 1
    y[7, 1] = 1  # a single positive: missing from ~(1 - 1/n)^n = 37% of resamples
    p = rng.random((n, 3))
    result = bootstrap_metrics(y, p, resamples=400, seed=0, classes=["a", "b", "c"])
    report = result.to_dict()
    assert report["per_class"]["c"] == {"auc": None, "ap": None}  # no positive at all
    missing = report["undefined_resamples"]["b"]["auc"]
    assert abs(missing / 400 - (1 - 1 / n) ** n) < 0.08
    assert "a" not in report["undefined_resamples"]


def test_rare_classes_missing_from_a_resample_do_not_lift_the_mean_interval_off_the_mean():
    # Four classes ranked perfectly (AP 1) and four with one positive each, ranked last (AP about 0.01): the
    # mean AP is 0.505. A resample without a rare positive (37 % of them, per class) must not average the
    # perfect classes alone, or the interval would reach far above 0.505 and, on fewer rare classes, past it.
    n = 100
    y = np.zeros((n, 8))
    y[70:, :4] = 1
    y[np.arange(4), np.arange(4, 8)] = 1
    scores = np.tile(np.linspace(0, 1, n)[:, None], (1, 8))
    result = bootstrap_metrics(y, scores, resamples=500, seed=0)
    point = result.ap.mean()
    low, high = result.to_dict()["mean"]["ap"]
    assert point == pytest.approx(0.505, abs=0.001)
    assert low <= point <= high < 0.52
    assert np.isnan(result.ap_samples[:, 4:]).mean() == pytest.approx(0.366, abs=0.04)


def _coverage(repetitions: int = 200) -> float:
    """Share of 95% intervals covering the true AUC of binormal scores, Phi(d / sqrt 2)."""
    d = 1.0
    truth = 0.5 * (1 + math.erf(d / math.sqrt(2) / math.sqrt(2)))
    rng = np.random.default_rng(12345)
    hits = 0
    for rep in range(repetitions):
        n = 240
        y = (rng.random(n) < 0.3).astype(float)
        scores = rng.normal(d * y, 1.0)
        result = bootstrap_metrics(y[:, None], scores[:, None], resamples=300, seed=rep)
        lo, hi = result.to_dict()["per_class"]["class_0"]["auc"]
        hits += lo <= truth <= hi
    return hits / repetitions


def test_interval_coverage_on_binormal_scores():
    # 200 repetitions: a binomial standard error of 1.5 points around 95%
    coverage = _coverage()
    assert 0.89 <= coverage <= 0.99, coverage


def test_cluster_bootstrap_of_duplicated_images_equals_image_bootstrap():
    # every image twice under one patient id: resampling patients gives each
    # copy the weight its original gets in the image bootstrap (doubled,
    # which leaves AUC and AP unchanged), so the replicates are identical
    y, p = _data(n=200)
    single = bootstrap_metrics(y, p, resamples=100, seed=4)
    patients = np.tile(np.arange(200).astype(str), 2)
    doubled = bootstrap_metrics(np.vstack([y, y]), np.vstack([p, p]), resamples=100, seed=4, patients=patients)
    assert doubled.unit == "patient"
    np.testing.assert_allclose(doubled.auc_samples, single.auc_samples, atol=1e-12)
    np.testing.assert_allclose(doubled.ap_samples, single.ap_samples, atol=1e-12)
    # ignoring the patients treats the copies as independent: intervals too narrow, by about 1 / sqrt(2)
    # (1000 resamples: the 2.5 / 97.5 percentiles of 100 are too noisy to compare widths)
    naive, doubled = (bootstrap_metrics(np.vstack([y, y]), np.vstack([p, p]), resamples=1000, seed=4, patients=ids)
                      for ids in (None, patients))
    width = lambda r: np.subtract(*r.to_dict()["mean"]["auc"][::-1])  # noqa: E731
    assert 0.6 < width(naive) / width(doubled) < 0.85


def test_blank_patient_ids_are_their_own_patients():
    index, count = bs._cluster_index(["p1", None, "p1", "", np.nan, "p2"], 6)
    assert count == 5
    assert index[0] == index[2] and len({index[1], index[3], index[4], index[0], index[5]}) == 5


def test_paired_comparison():
    y, p = _data()
    same = paired_bootstrap(y, p, p.copy(), resamples=100, seed=2, classes=list("abcd"))
    report = same.to_dict(groups=["head", "head", "tail", "medium"])
    for entry in [*report["per_class"].values(), report["mean"], *report["groups"].values()]:
        assert entry["auc"]["difference"] == 0.0 and entry["auc"]["interval"] == [0.0, 0.0]
        assert entry["ap"]["share_a_better"] == 0.0

    rng = np.random.default_rng(5)
    q = np.clip(p + rng.normal(0, 0.2, p.shape), 0, 1)
    paired = paired_bootstrap(y, p, q, resamples=100, seed=2)
    # the same seed gives the same resamples to a single-table bootstrap
    a = bootstrap_metrics(y, p, resamples=100, seed=2)
    b = bootstrap_metrics(y, q, resamples=100, seed=2)
    diff = a.auc_samples[:, 1] - b.auc_samples[:, 1]
    entry = paired.to_dict()["per_class"]["class_1"]["auc"]
    assert entry["difference"] == pytest.approx(a.auc[1] - b.auc[1])
    assert entry["interval"] == pytest.approx(np.percentile(diff, [2.5, 97.5]))
    assert entry["share_a_better"] == pytest.approx(np.mean(diff > 0))
    assert paired.to_dict()["mean"]["ap"]["difference"] == pytest.approx(np.mean(a.ap) - np.mean(b.ap))


def test_bad_arguments():
    y, p = _data(n=20)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_metrics(y, p, resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_metrics(y, p, level=95)
    with pytest.raises(ValueError, match="patient ids"):
        bootstrap_metrics(y, p, patients=["a"] * 3)


def test_f1_at_tuned_thresholds_equals_sklearn_sample_weight():
    from sklearn.metrics import f1_score

    y, p = _data()
    thresholds = np.array([0.5, 0.3, 0.2, 0.4])
    cells = bs._f1_cells(y, p, thresholds, np.float64)
    weights = bs._weights(np.random.default_rng(3), 6, None, len(y), np.float64)
    f1 = bs._f1_from_counts(cells @ weights)
    for r in range(weights.shape[1]):
        for k in range(y.shape[1]):
            known = ~np.isnan(y[:, k])
            expected = f1_score(y[known, k], p[known, k] >= thresholds[k], sample_weight=weights[known, r])
            assert f1[k, r] == pytest.approx(expected, abs=1e-12)


def test_paired_comparison_of_f1_at_each_tables_thresholds():
    from cxrlt.evaluation.metrics import f1_scores

    y, p = _data()
    q = np.clip(p + np.random.default_rng(5).normal(0, 0.2, p.shape), 0, 1)
    ta, tb = [0.5, 0.3, 0.2, 0.4], [0.4, 0.4, 0.3, 0.3]
    paired = paired_bootstrap(y, p, q, resamples=100, seed=2, thresholds=(ta, tb))
    np.testing.assert_allclose(paired.a.f1_tuned, f1_scores(y, p, ta), rtol=0, atol=1e-12)
    np.testing.assert_allclose(paired.b.f1_tuned, f1_scores(y, q, tb), rtol=0, atol=1e-12)
    report = paired.to_dict(groups=["head", "head", "tail", "medium"])
    diff = paired.a.f1_tuned_samples[:, 0] - paired.b.f1_tuned_samples[:, 0]
    entry = report["per_class"]["class_0"]["f1_tuned"]
    assert entry["difference"] == pytest.approx(paired.a.f1_tuned[0] - paired.b.f1_tuned[0])
    assert entry["interval"] == pytest.approx(np.percentile(diff, [2.5, 97.5]))
    assert report["mean"]["f1_tuned"]["a"] == pytest.approx(np.mean(f1_scores(y, p, ta)))
    assert set(report["groups"]["tail"]) == {"auc", "ap", "f1_tuned", "classes"}
    # the AUC / AP replicates do not depend on whether F1 is resampled too
    plain = paired_bootstrap(y, p, q, resamples=100, seed=2)
    np.testing.assert_array_equal(plain.a.auc_samples, paired.a.auc_samples)
    assert "f1_tuned" not in plain.to_dict()["mean"]
