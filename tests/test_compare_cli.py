"""`cxrlt compare`: paired differences with intervals, files written, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrlt.cli import main
from cxrlt.evaluation.bootstrap import paired_bootstrap
from cxrlt.evaluation.metrics import average_precision, roc_auc
from cxrlt.evaluation.predictions import write_predictions

CLASSES = ["Atelectasis", "Effusion", "Mass", "Hernia"]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    ids = [f"{i:05d}.png" for i in range(n)]
    y = (rng.random((n, 4)) < [0.4, 0.3, 0.1, 0.05]).astype(float)
    good = np.clip(rng.normal(0.3 + 0.35 * y, 0.2), 0, 1)
    worse = np.clip(good + rng.normal(0, 0.25, good.shape), 0, 1)
    y[rng.random(y.shape) < 0.05] = np.nan
    frame = pd.DataFrame(y, columns=CLASSES)
    frame.insert(0, "image_id", ids)
    frame["patient_id"] = [f"p{i // 3}" for i in range(n)]
    frame.iloc[::-1].to_csv(tmp_path / "labels.csv", index=False)
    a = write_predictions(tmp_path / "a.csv", ids, CLASSES, good)
    # B with its rows and columns in another order (and one class spelled differently)
    b_classes = ["Hernia", "Mass", "Pleural Effusion", "Atelectasis"]
    b = write_predictions(tmp_path / "b.csv", ids[::-1], b_classes, worse[::-1][:, [3, 2, 1, 0]])
    return {"a": a, "b": b, "labels": tmp_path / "labels.csv", "y": y, "good": good, "worse": worse, "ids": ids}


def test_compare_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", str(files["a"]), str(files["b"]), "--labels", str(files["labels"]), "--resamples", "200",
                 "--patients", "patient_id", "--out", str(out), "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "comparison.json").read_text())
    assert report["unit"] == "patient" and report["resamples"] == 200 and report["n_images"] == 300
    y, good, worse = files["y"], files["good"], files["worse"]
    auc_a, auc_b = roc_auc(y, good), roc_auc(y, worse)
    entry = report["per_class"]["Effusion"]["auc"]
    assert entry["a"] == pytest.approx(auc_a[1]) and entry["b"] == pytest.approx(auc_b[1])
    assert entry["difference"] == pytest.approx(auc_a[1] - auc_b[1])
    assert report["mean"]["ap"]["difference"] == pytest.approx(
        np.mean(average_precision(y, good)) - np.mean(average_precision(y, worse)))
    # the same numbers as the library call with the same patients and seed
    patients = [f"p{i // 3}" for i in range(300)]
    direct = paired_bootstrap(y, good, worse, CLASSES, resamples=200, patients=patients, seed=0).to_dict()
    assert entry["interval"] == pytest.approx(direct["per_class"]["Effusion"]["auc"]["interval"])
    lo, hi = report["mean"]["auc"]["interval"]
    assert 0 < lo < hi  # noise added to B costs AUC: the interval excludes 0
    assert report["mean"]["auc"]["share_a_better"] == 1.0
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["name"][:4]) == CLASSES and "mean" in set(table["name"])
    assert table.loc[table["name"] == "Mass", "auc_difference"].item() == pytest.approx(auc_a[2] - auc_b[2])
    assert (out / "comparison.png").stat().st_size > 10_000
    assert "Effusion" in stdout and "AUC A-B [95%]" in stdout and "mean (4)" in stdout


def test_table_against_itself(files, capsys):
    assert main(["compare", str(files["a"]), str(files["a"]), "--labels", str(files["labels"]),
                 "--resamples", "50", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "+0.0000 [+0.0000, +0.0000]" in stdout and "unit" not in stdout


def test_mismatched_ids_are_refused(files, tmp_path, capsys):
    frame = pd.read_csv(files["b"], dtype={"image_id": str})
    frame.iloc[5:].to_csv(tmp_path / "short.csv", index=False)
    code = main(["compare", str(files["a"]), str(tmp_path / "short.csv"), "--labels", str(files["labels"])])
    err = capsys.readouterr().err
    assert code == 2
    # B is reversed, so the dropped rows are 00299 ... 00295
    assert "5 of the 300 ids of" in err and "short.csv" in err and "00295.png" in err


def test_mismatched_classes_are_refused(files, tmp_path, capsys):
    frame = pd.read_csv(files["b"], dtype={"image_id": str}).drop(columns=["Mass"])
    frame.to_csv(tmp_path / "fewer.csv", index=False)
    assert main(["compare", str(files["a"]), str(tmp_path / "fewer.csv"), "--labels", str(files["labels"])]) == 2
    err = capsys.readouterr().err
    assert "same classes" in err and "'Mass'" in err and "a.csv" in err


def test_bad_options(files, capsys):
    assert main(["compare", str(files["a"]), str(files["b"]), "--labels", str(files["labels"]),
                 "--resamples", "0"]) == 2
    assert "--resamples" in capsys.readouterr().err
    assert main(["compare", str(files["a"]), str(files["b"]), "--labels", str(files["labels"]),
                 "--patients", "subject"]) == 2
    err = capsys.readouterr().err
    assert "'subject'" in err and "patient_id" in err


# ------------------------------------------- the same options in `cxrlt evaluate`
def test_evaluate_with_bootstrap_patients_and_temperature(files, tmp_path, capsys):
    rng = np.random.default_rng(9)
    val_y = (rng.random((200, 4)) < [0.4, 0.3, 0.1, 0.05]).astype(float)
    z = rng.normal(-1 + 2 * val_y, 1.0)
    val_pred = write_predictions(tmp_path / "val.csv", [f"v{i}" for i in range(200)], CLASSES, 1 / (1 + np.exp(-3 * z)))
    val_labels = pd.DataFrame(val_y, columns=CLASSES)
    val_labels.insert(0, "image_id", [f"v{i}" for i in range(200)])
    val_labels.to_csv(tmp_path / "val_labels.csv", index=False)
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--predictions", str(files["a"]), "--labels", str(files["labels"]), "--json", str(out),
                 "--bootstrap", "150", "--patients", "patient_id", "--seed", "3", "--no-progress",
                 "--val-predictions", str(val_pred), "--val-labels", str(tmp_path / "val_labels.csv"), "--temperature"])
    stdout = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    intervals = report["intervals"]
    assert intervals["unit"] == "patient" and intervals["resamples"] == 150 and intervals["seed"] == 3
    from cxrlt.evaluation.bootstrap import bootstrap_metrics
    from cxrlt.evaluation.calibration import fit_temperature

    patients = [f"p{i // 3}" for i in range(300)]
    direct = bootstrap_metrics(files["y"], files["good"], CLASSES, resamples=150, patients=patients, seed=3)
    assert intervals["per_class"]["Mass"]["ap"] == pytest.approx(direct.to_dict()["per_class"]["Mass"]["ap"])
    assert report["calibration"]["temperature"] == pytest.approx(
        fit_temperature(val_y, 1 / (1 + np.exp(-3 * z))), rel=1e-5)
    assert "bootstrap intervals (150 resamples of patients)" in stdout and "calibration: pooled ECE" in stdout


def test_evaluate_option_errors(files, tmp_path, capsys):
    base = ["evaluate", "--predictions", str(files["a"]), "--labels", str(files["labels"]), "--json",
            str(tmp_path / "m.json")]
    assert main(base + ["--temperature"]) == 2
    assert "--val-predictions" in capsys.readouterr().err
    assert main(base + ["--patients", "patient_id"]) == 2
    assert "--bootstrap" in capsys.readouterr().err
