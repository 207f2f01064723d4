import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrlt.cli import main
from cxrlt.data.stats import class_groups
from cxrlt.evaluation.metrics import compute_metrics, tune_thresholds
from cxrlt.evaluation.predictions import write_predictions

CLASSES = ["Atelectasis", "Effusion", "Mass", "Hernia"]


def make_split(rng, n, prevalence):
    ids = [f"{i:05d}.png" for i in range(n)]
    y = (rng.random((n, len(CLASSES))) < prevalence).astype(float)
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    return ids, y, p


def label_csv(path, ids, y, id_column="image_id"):
    frame = pd.DataFrame(y, columns=CLASSES)
    frame.insert(0, id_column, ids)
    frame["Patient Age"] = 50  # metadata is ignored
    frame.to_csv(path, index=False)  # NaN -> blank
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    ids, y, p = make_split(rng, 120, [0.4, 0.3, 0.1, 0.05])
    y[rng.random(y.shape) < 0.05] = np.nan
    labels = label_csv(tmp_path / "test_labels.csv", ids[::-1], y[::-1], id_column="Image Index")  # other order
    preds = write_predictions(tmp_path / "test_pred.csv", ids, CLASSES, p)
    train_ids, train_y, _ = make_split(rng, 300, [0.1, 0.5, 0.3, 0.02])
    train = label_csv(tmp_path / "train_labels.csv", train_ids, train_y)
    return {"ids": ids, "y": y, "p": p, "labels": labels, "preds": preds, "train": train, "train_y": train_y}


def test_evaluate_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "out" / "metrics.json"
    code = main(["evaluate", "--predictions", str(files["preds"]), "--labels", str(files["labels"]),
                 "--groups-from", str(files["train"]), "--json", str(out), "--split", "test"])
    stdout = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    groups = class_groups(files["train_y"].sum(axis=0))
    expected = compute_metrics(files["y"], files["p"], CLASSES).to_dict(groups)
    assert report.pop("calibration")["bins"] == 15  # checked in tests/evaluation/test_calibration.py
    assert (report.pop("split"), report.pop("n_images")) == ("test", 120)  # a run's metrics.json schema
    assert report == json.loads(json.dumps(expected))
    # and against sklearn, not only against ourselves
    known = ~np.isnan(files["y"][:, 2])
    assert report["per_class"]["Mass"]["auc"] == pytest.approx(roc_auc_score(files["y"][known, 2], files["p"][known, 2]))
    assert report["per_class"]["Mass"]["ap"] == pytest.approx(
        average_precision_score(files["y"][known, 2], files["p"][known, 2])
    )
    assert report["per_class"]["Effusion"]["group"] == "head"  # most training positives
    assert "groups from the training positives" in stdout
    assert stdout.count("\n") > len(CLASSES) and "Hernia" in stdout and "mean (4 of 4)" in stdout


def test_groups_from_evaluated_labels_are_announced(files, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--predictions", str(files["preds"]), "--labels", str(files["labels"]), "--json", str(out)]) == 0
    assert "groups from the evaluated labels" in capsys.readouterr().out
    report = json.loads(out.read_text())
    positives = np.nansum(files["y"] == 1, axis=0)
    assert [report["per_class"][c]["group"] for c in CLASSES] == class_groups(positives)


def test_tuned_thresholds_and_plots(files, tmp_path, capsys):
    rng = np.random.default_rng(1)
    val_ids, val_y, val_p = make_split(rng, 100, [0.4, 0.3, 0.1, 0.05])
    val_pred = write_predictions(tmp_path / "val_pred.csv", val_ids, CLASSES[::-1], val_p[:, ::-1])  # other order
    val_labels = label_csv(tmp_path / "val_labels.csv", val_ids, val_y)
    out = tmp_path / "m.json"
    code = main(["evaluate", "--predictions", str(files["preds"]), "--labels", str(files["labels"]), "--json", str(out),
                 "--val-predictions", str(val_pred), "--val-labels", str(val_labels), "--plots", str(tmp_path / "plots")])
    assert code == 0
    thresholds = tune_thresholds(val_y, val_p)
    report = json.loads(out.read_text())
    expected = compute_metrics(files["y"], files["p"], CLASSES, thresholds=thresholds)
    assert [report["per_class"][c]["threshold"] for c in CLASSES] == pytest.approx(thresholds.tolist())
    assert report["mean"]["f1_tuned"] == pytest.approx(float(np.mean(expected.f1_tuned)))
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["per_class.png", "pr.png", "reliability.png", "roc.png"]
    assert "F1@tuned" in capsys.readouterr().out


def test_mismatched_ids_exit_2_without_output(files, tmp_path, capsys):
    short = label_csv(tmp_path / "short.csv", files["ids"][:100], files["y"][:100])
    out = tmp_path / "m.json"
    code = main(["evaluate", "--predictions", str(files["preds"]), "--labels", str(short), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "20 of the 120 predicted ids have no labels (e.g. '00100.png', '00101.png', '00102.png', ...)" in err
    assert str(files["preds"]) in err and str(short) in err
    assert "Traceback" not in err


def test_mismatched_classes_exit_2_without_output(files, tmp_path, capsys):
    frame = pd.read_csv(files["labels"]).rename(columns={"Hernia": "Pneumonia"})
    frame.to_csv(tmp_path / "other.csv", index=False)
    out = tmp_path / "m.json"
    code = main(["evaluate", "--predictions", str(files["preds"]), "--labels", str(tmp_path / "other.csv"), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "no column for 1 of the 4 classes ('Hernia')" in err


def test_missing_arguments_and_help(capsys):
    assert main(["evaluate", "--predictions", "p.csv"]) == 2
    assert "needs --labels, --json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--help"])
    assert info.value.code == 0
    assert "cxrlt evaluate --predictions" in capsys.readouterr().out


def test_groups_come_from_the_training_counts_saved_with_the_run(files, tmp_path, capsys):
    """A run's predictions.csv beside its model.json: the groups are the training split's, not the test labels'."""
    run = tmp_path / "run"
    run.mkdir()
    preds = run / "predictions.csv"
    preds.write_bytes(files["preds"].read_bytes())
    saved = [5, 80, 300, 40]  # training positives unlike the evaluated labels' (Mass the most frequent here)
    (run / "model.json").write_text(json.dumps({"model": {"backbone": "resnet10t"}, "classes": CLASSES[::-1],
                                                "image_size": 32, "train_positives": saved[::-1]}))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(files["labels"]), "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [report["per_class"][c]["group"] for c in CLASSES] == class_groups(saved) == ["tail", "medium", "head", "medium"]
    assert class_groups(np.nansum(files["y"] == 1, axis=0)) != class_groups(saved)
    assert f"training positives saved in {run / 'model.json'}" in stdout and "train pos" in stdout
    # --groups-from takes a run folder too, and says when it holds no model
    assert main(["evaluate", "--predictions", str(files["preds"]), "--labels", str(files["labels"]), "--json", str(out),
                 "--groups-from", str(run), "--head", "2", "--tail", "1"]) == 0
    report = json.loads(out.read_text())
    assert [report["per_class"][c]["group"] for c in CLASSES] == ["tail", "head", "head", "medium"]
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--predictions", str(files["preds"]), "--labels", str(files["labels"]), "--json", str(out),
                 "--groups-from", str(tmp_path / "empty")]) == 2
    assert "no model card (model.json) here" in capsys.readouterr().err
