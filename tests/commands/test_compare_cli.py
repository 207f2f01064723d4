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


# ------------------------------------------------ groups and F1 as in `cxrlt evaluate`
def _run_folder(folder, predictions, classes, train_positives, thresholds):
    """A run folder as `cxrlt train` leaves it: predictions.csv beside model.json with what training saved."""
    folder.mkdir()
    (folder / "predictions.csv").write_bytes(predictions.read_bytes())
    (folder / "model.json").write_text(json.dumps({"model": {"backbone": "resnet10t"}, "image_size": 32,
                                                   "classes": classes, "train_positives": train_positives,
                                                   "thresholds": thresholds}))
    return folder / "predictions.csv"


def _validation(tmp_path, files):
    rng = np.random.default_rng(4)
    y = (rng.random((200, 4)) < [0.4, 0.3, 0.1, 0.05]).astype(float)
    good = np.clip(rng.normal(0.3 + 0.35 * y, 0.2), 0, 1)
    worse = np.clip(good + rng.normal(0, 0.25, good.shape), 0, 1)
    ids = [f"v{i}" for i in range(200)]
    labels = pd.DataFrame(y, columns=CLASSES)
    labels.insert(0, "image_id", ids)
    labels.to_csv(tmp_path / "val_labels.csv", index=False)
    va = write_predictions(tmp_path / "va.csv", ids, CLASSES, good)
    vb = write_predictions(tmp_path / "vb.csv", ids, CLASSES[::-1], worse[:, ::-1])  # other column order
    return y, good, worse, va, vb, tmp_path / "val_labels.csv"


def test_compare_groups_come_from_the_saved_training_counts_with_evaluates_options(files, tmp_path, capsys):
    from cxrlt.data.stats import class_groups

    saved = [50, 900, 10, 400]  # a training split unlike the test labels (Effusion the most frequent here)
    # saved in another class order, as another run may have them
    a = _run_folder(tmp_path / "run_a", files["a"], ["Hernia", "Mass", "Effusion", "Atelectasis"],
                    saved[::-1], [0.5] * 4)
    base = ["compare", str(a), str(files["b"]), "--labels", str(files["labels"]), "--resamples", "20",
            "--no-progress"]
    out = tmp_path / "cmp"
    assert main(base + ["--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    report = json.loads((out / "comparison.json").read_text())
    table = pd.read_csv(out / "comparison.csv").set_index("name")
    assert [table.loc[c, "group"] for c in CLASSES] == class_groups(saved) == ["medium", "head", "tail", "medium"]
    assert f"training positives saved in {tmp_path / 'run_a' / 'model.json'}" in stdout
    assert report["groups"]["head"]["classes"] == 1
    # the group options of `cxrlt evaluate`
    assert main(base + ["--out", str(out), "--group-method", "count", "--head-min", "400", "--tail-max", "50"]) == 0
    table = pd.read_csv(out / "comparison.csv").set_index("name")
    assert [table.loc[c, "group"] for c in CLASSES] == ["medium", "head", "tail", "head"]
    capsys.readouterr()
    assert main(base + ["--head", "3", "--tail", "2"]) == 2
    assert "--head / --tail" in capsys.readouterr().err


def test_compare_covers_f1_at_thresholds_tuned_on_validation(files, tmp_path, capsys):
    from cxrlt.evaluation.metrics import f1_scores, tune_thresholds

    val_y, val_good, val_worse, va, vb, val_labels = _validation(tmp_path, files)
    out = tmp_path / "cmp"
    assert main(["compare", str(files["a"]), str(files["b"]), "--labels", str(files["labels"]), "--resamples", "50",
                 "--no-progress", "--val-predictions", str(va), str(vb), "--val-labels", str(val_labels),
                 "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    report = json.loads((out / "comparison.json").read_text())
    ta, tb = tune_thresholds(val_y, val_good), tune_thresholds(val_y, val_worse)
    assert report["thresholds"]["a"] == pytest.approx(ta.tolist()) and report["thresholds"]["b"] == pytest.approx(tb.tolist())
    f1_a, f1_b = f1_scores(files["y"], files["good"], ta), f1_scores(files["y"], files["worse"], tb)
    entry = report["per_class"]["Effusion"]["f1_tuned"]
    assert entry["a"] == pytest.approx(f1_a[1]) and entry["b"] == pytest.approx(f1_b[1])
    assert report["mean"]["f1_tuned"]["difference"] == pytest.approx(np.mean(f1_a) - np.mean(f1_b))
    assert report["mean"]["f1_tuned"]["interval"] is not None
    assert "F1@tuned A-B [95%]" in stdout and "thresholds tuned on" in stdout
    assert pd.read_csv(out / "comparison.csv").loc[0, "f1_tuned_a"] == pytest.approx(f1_a[0])


def test_compare_uses_the_thresholds_each_run_saved(files, tmp_path, capsys):
    from cxrlt.evaluation.metrics import f1_scores

    ta, tb = [0.45, 0.5, 0.4, 0.35], [0.5, 0.55, 0.45, 0.4]
    a = _run_folder(tmp_path / "run_a", files["a"], CLASSES, [1, 2, 3, 4], ta)
    b = _run_folder(tmp_path / "run_b", files["b"], CLASSES[::-1], [4, 3, 2, 1], tb[::-1])
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--labels", str(files["labels"]), "--resamples", "20", "--no-progress",
                 "--out", str(out)]) == 0
    assert "thresholds each run tuned" in capsys.readouterr().out
    report = json.loads((out / "comparison.json").read_text())
    assert report["mean"]["f1_tuned"]["a"] == pytest.approx(np.mean(f1_scores(files["y"], files["good"], ta)))
    assert report["mean"]["f1_tuned"]["b"] == pytest.approx(np.mean(f1_scores(files["y"], files["worse"], tb)))
    # without thresholds for both tables there is no F1 column, and the output says why
    assert main(["compare", str(a), str(files["b"]), "--labels", str(files["labels"]), "--resamples", "20",
                 "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "F1@tuned" not in stdout and "no F1" in stdout
