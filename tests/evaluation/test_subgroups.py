"""Subgroup scores equal sklearn on each hand-built subset; TPR gaps, worst subgroups and small groups by hand."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrlt.evaluation.metadata import Attribute
from cxrlt.evaluation.scoring import BootstrapSettings, score_predictions
from cxrlt.evaluation.subgroups import score_subgroups

CLASSES = ["A", "B"]


def _data(n=90, seed=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 2)).astype(float)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, 2)), 0, 1)
    y[5, 1] = np.nan  # a missing label is left out of that class only
    sex = np.array(["female", "male"] * (n // 2), dtype=object)
    sex[7] = None  # no value: excluded and counted
    return y, p, sex


def test_each_subgroup_equals_sklearn_on_its_subset():
    y, p, sex = _data()
    thresholds = np.array([0.4, 0.6])
    sections, summary = score_subgroups(y, p, CLASSES, {"sex": Attribute("sex", "Patient Sex", sex)},
                                        thresholds=thresholds, tuned=True, min_images=10)
    for group in ("female", "male"):
        mask = sex == group
        entry = sections["sex"][group]
        assert entry["n_images"] == mask.sum()
        aucs, aps = [], []
        for j, name in enumerate(CLASSES):
            known = mask & ~np.isnan(y[:, j])
            auc = roc_auc_score(y[known, j], p[known, j])
            ap = average_precision_score(y[known, j], p[known, j])
            f1 = f1_score(y[known, j], p[known, j] >= thresholds[j])
            got = entry["classes"][name]
            assert got["auc"] == pytest.approx(auc, abs=1e-12)
            assert got["ap"] == pytest.approx(ap, abs=1e-12)
            assert got["f1"] == pytest.approx(f1, abs=1e-12)
            aucs.append(auc)
            aps.append(ap)
        assert entry["auc"] == pytest.approx(np.mean(aucs))
        assert entry["map"] == pytest.approx(np.mean(aps))
    assert summary["sex"]["excluded"] == 1
    assert summary["settings"] == {"thresholds": "tuned", "min_images": 10}


def test_tpr_gap_and_worst_subgroup_by_hand():
    # class A: female positives 0.9, 0.2 (TPR 1/2 at 0.5), male positives 0.8, 0.7, 0.6 (TPR 1)
    y = np.array([[1], [1], [0], [1], [1], [1], [0]], dtype=float)
    p = np.array([[0.9], [0.2], [0.3], [0.8], [0.7], [0.6], [0.65]])
    sex = np.array(["female"] * 3 + ["male"] * 4, dtype=object)
    sections, summary = score_subgroups(y, p, ["A"], {"sex": Attribute("sex", "sex", sex)},
                                        thresholds=np.array([0.5]), tuned=False, min_images=1)
    gap = summary["sex"]["tpr_gap"]["A"]
    assert gap["tpr"] == {"female": 0.5, "male": 1.0}
    assert gap["gap"] == 0.5 and gap["highest"] == "male" and gap["lowest"] == "female"
    # female AUC: pairs (0.9>0.3) yes, (0.2>0.3) no -> 0.5; male: 0.8, 0.7 beat 0.65, 0.6 does not -> 2/3
    assert sections["sex"]["female"]["auc"] == pytest.approx(0.5)
    assert sections["sex"]["male"]["auc"] == pytest.approx(2 / 3)
    assert summary["sex"]["worst"]["A"] == {"group": "female", "auc": 0.5}


def test_too_small_subgroups_are_listed_without_scores():
    y, p, sex = _data()
    sex[:3] = "other-clinic"
    sections, summary = score_subgroups(y, p, CLASSES, {"source": Attribute("source", "source", sex)},
                                        thresholds=np.full(2, 0.5), tuned=False, min_images=10)
    small = sections["source"]["other-clinic"]
    assert small == {"n_images": 3, "too_small": True, "auc": None, "map": None, "f1": None,
                     "classes": {"A": {"auc": None, "ap": None}, "B": {"auc": None, "ap": None}}}
    assert summary["source"]["too_small"] == ["other-clinic"]
    assert "other-clinic" not in summary["source"]["tpr_gap"]["A"]["tpr"]


def test_intervals_resample_patients_and_hold_the_point_value():
    y, p, sex = _data(n=200, seed=5)
    patients = np.repeat(np.arange(100), 2)
    sections, summary = score_subgroups(y, p, CLASSES, {"sex": Attribute("sex", "sex", sex)},
                                        thresholds=np.full(2, 0.5), tuned=False, min_images=10, resamples=200,
                                        seed=1, patients=patients)
    entry = sections["sex"]["male"]
    lo, hi = entry["intervals"]["auc"]
    assert lo < entry["auc"] < hi
    gap = summary["sex"]["tpr_gap"]["A"]
    assert gap["interval"][0] <= gap["gap"] <= gap["interval"][1]
    again, _ = score_subgroups(y, p, CLASSES, {"sex": Attribute("sex", "sex", sex)}, thresholds=np.full(2, 0.5),
                               tuned=False, min_images=10, resamples=200, seed=1, patients=patients)
    assert again["sex"]["male"]["intervals"] == entry["intervals"]


def test_the_scoring_core_adds_the_sections_at_tuned_thresholds():
    from cxrlt.evaluation.scoring import Tuning

    y, p, sex = _data()
    scores = score_predictions(y, p, CLASSES, split="test", thresholds=[0.3, 0.7], tuning=Tuning("max_f1", "val"),
                               bootstrap=BootstrapSettings(20), subgroups={"sex": Attribute("sex", "sex", sex)},
                               subgroup_min_images=5)
    report = scores.metrics
    assert list(report)[-2:] == ["subgroups", "subgroup_summary"]
    assert report["subgroup_summary"]["settings"]["thresholds"] == "tuned"
    female = sex == "female"
    expected = f1_score(y[female, 0], p[female, 0] >= 0.3)
    assert report["subgroups"]["sex"]["female"]["classes"]["A"]["f1"] == pytest.approx(expected)
    assert any(line.startswith("subgroups by sex") for line in scores.summary_lines())
    assert pd.notna(report["subgroups"]["sex"]["female"]["intervals"]["map"][0])


def test_plots_include_the_subgroup_figure(tmp_path):
    y, p, sex = _data()
    scores = score_predictions(y, p, CLASSES, split="test", subgroups={"sex": Attribute("sex", "sex", sex)},
                               subgroup_min_images=50)
    written = scores.write_plots(tmp_path)
    assert (tmp_path / "subgroups.png") in written
    assert (tmp_path / "subgroups.png").read_bytes().startswith(b"\x89PNG")
