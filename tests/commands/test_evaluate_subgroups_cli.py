"""`cxrlt evaluate --subgroups / --aggregate study / --protocol` and `cxrlt submission` on hand-built tables."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cli_contract import assert_refused, run_cxrlt
from cxrlt.evaluation.protocols import get_protocol


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(7)
    n = 80
    ids = [f"{i:08d}_000.png" for i in range(n)]
    y = rng.integers(0, 2, (n, 2))
    p = np.clip(0.3 * y + 0.7 * rng.random((n, 2)), 0, 1)
    pd.DataFrame({"Image Index": ids, "Atelectasis": p[:, 0], "Edema": p[:, 1]}).to_csv(tmp_path / "p.csv", index=False)
    labels = pd.DataFrame({"Image Index": ids, "Atelectasis": y[:, 0], "Edema": y[:, 1],
                           "Patient Sex": ["M", "F"] * (n // 2), "Patient Age": rng.integers(1, 99, n),
                           "View Position": ["PA"] * 60 + ["AP"] * 20, "Patient ID": np.arange(n) // 2,
                           "study_id": [f"s{i // 2}" for i in range(n)]})
    labels.to_csv(tmp_path / "l.csv", index=False)
    return tmp_path, labels, p


def test_json_contract_and_sklearn_per_subgroup(tables):
    folder, labels, p = tables
    out = folder / "out.json"
    outcome = run_cxrlt(["evaluate", "--predictions", folder / "p.csv", "--labels", folder / "l.csv",
                         "--subgroups", "sex,age,view", "--json", out, "--no-progress"])
    assert outcome.code == 0, outcome.err
    report = json.loads(out.read_text())
    assert set(report["subgroups"]) == {"sex", "age", "view"}
    for attribute, groups in report["subgroups"].items():
        for group, entry in groups.items():
            assert {"n_images", "auc", "map", "classes"} <= set(entry)
            assert set(entry["classes"]) == {"Atelectasis", "Edema"}
            assert all(set(c) >= {"auc", "ap"} for c in entry["classes"].values())
    male = (labels["Patient Sex"] == "M").to_numpy()
    entry = report["subgroups"]["sex"]["male"]
    assert entry["n_images"] == male.sum()
    y = labels[["Atelectasis", "Edema"]].to_numpy()
    assert entry["classes"]["Edema"]["auc"] == pytest.approx(roc_auc_score(y[male, 1], p[male, 1]))
    assert entry["map"] == pytest.approx(np.mean([average_precision_score(y[male, j], p[male, j]) for j in (0, 1)]))
    assert report["subgroups"]["view"]["AP"]["n_images"] == 20
    assert "subgroups by view" in outcome.out


def test_study_aggregation_from_the_command_line(tables):
    folder, labels, p = tables
    out = folder / "studies.json"
    outcome = run_cxrlt(["evaluate", "--predictions", folder / "p.csv", "--labels", folder / "l.csv",
                         "--aggregate", "study", "--study-merge", "mean", "--json", out, "--no-progress"])
    assert outcome.code == 0, outcome.err
    report = json.loads(out.read_text())
    assert report["n_images"] == 40
    assert report["aggregate"]["n_studies"] == 40 and report["aggregate"]["excluded_images"] == 0
    y = labels[["Atelectasis", "Edema"]].to_numpy()
    merged = p.reshape(40, 2, 2).mean(axis=1)
    union = y.reshape(40, 2, 2).max(axis=1)
    assert report["per_class"]["Atelectasis"]["auc"] == pytest.approx(roc_auc_score(union[:, 0], merged[:, 0]))


def test_protocol_refuses_another_label_space(tables):
    folder, _, _ = tables
    assert_refused(["evaluate", "--predictions", folder / "p.csv", "--labels", folder / "l.csv", "--protocol",
                    "cxr-lt-2023", "--json", folder / "x.json"],
                   says=["CXR-LT 2023 label space", "lacks 24 of its 26 classes"], absent=[folder / "x.json"])


def test_bad_subgroup_input_is_refused(tables):
    folder, labels, _ = tables
    labels["Patient Age"] = labels["Patient Age"].astype(object)
    labels.loc[4, "Patient Age"] = "unknown"
    labels.to_csv(folder / "bad.csv", index=False)
    base = ["evaluate", "--predictions", folder / "p.csv", "--json", folder / "x.json"]
    assert_refused(base + ["--labels", folder / "bad.csv", "--subgroups", "age"],
                   says=["bad.csv, line 6", "'unknown', which is not an age"], absent=[folder / "x.json"])
    assert_refused(base + ["--labels", folder / "l.csv", "--subgroups", "race"], says=["some of sex, age, view"])
    assert_refused(base + ["--labels", folder / "l.csv", "--subgroups", "view", "--aggregate", "study"],
                   says=["a study mixes views"])


def test_submission_csv(tables, tmp_path):
    protocol = get_protocol("cxr-lt-2024-zero-shot")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((3, 5)), columns=list(reversed(protocol.classes)))
    frame.insert(0, "dicom_id", ["a", "b", "c"])
    frame.to_csv(tmp_path / "pz.csv", index=False)
    outcome = run_cxrlt(["submission", "--predictions", tmp_path / "pz.csv", "--protocol", "cxr-lt-2024-zero-shot",
                         "--out", tmp_path / "sub.csv"])
    assert outcome.code == 0, outcome.err
    written = pd.read_csv(tmp_path / "sub.csv")
    assert list(written.columns) == ["dicom_id", *protocol.classes]
    np.testing.assert_allclose(written["Bulla"], frame["Bulla"])
    assert_refused(["submission", "--predictions", tables[0] / "p.csv", "--protocol", "cxr-lt-2023", "--out",
                    tmp_path / "s2.csv"], says=["lacks 24 of its 26"], absent=[tmp_path / "s2.csv"])
