"""Ensembles of prediction tables: alignment, model-wise means, class-wise selection, `cxrlt ensemble`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from cxrlt.cli import main
from cxrlt.ensemble.combine import classwise_ensemble, classwise_selection, mean_ensemble, stack_tables
from cxrlt.errors import ConfigError, InputError
from cxrlt.evaluation.predictions import ClassTable, read_predictions, write_predictions

IDS = np.array([f"img{i}" for i in range(6)], dtype=object)
CLASSES = ("Atelectasis", "Effusion")
VAL_LABELS = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [0, 1], [0, 0]], dtype=float)
# validation probabilities (images x classes): model 0 ranks Atelectasis perfectly and Effusion backwards,
# model 1 the other way round, model 2 is fair on both
VAL = [
    np.array([[.9, .1], [.8, .9], [.7, .2], [.3, .8], [.2, .3], [.1, .7]]),
    np.array([[.1, .9], [.2, .1], [.3, .8], [.9, .2], [.8, .7], [.7, .3]]),
    np.array([[.6, .6], [.5, .5], [.3, .4], [.4, .1], [.2, .2], [.1, .3]]),
]
TEST = [np.linspace(0.05, 0.95, 12).reshape(6, 2) ** (m + 1) for m in range(3)]


def table(values, ids=IDS, classes=CLASSES, name=None):
    return ClassTable(np.asarray(ids, dtype=object), tuple(classes), np.asarray(values, dtype=float),
                      None if name is None else __import__("pathlib").Path(name))


LABELS = table(VAL_LABELS)


def test_hand_made_validation_scores_match_sklearn_and_hand_values():
    selection = classwise_selection([table(v) for v in VAL], LABELS, top_k=1)
    for m in range(3):
        for j in range(2):
            assert selection.scores[m, j] == pytest.approx(average_precision_score(VAL_LABELS[:, j], VAL[m][:, j]))
    # by hand: positives ranked 1,2,4 -> (1 + 1 + 3/4) / 3; ranked 4,5,6 -> (1/4 + 2/5 + 3/6) / 3; 1, 2/3, 3/5
    assert selection.scores[:, 0] == pytest.approx([1.0, 0.38333333, 0.91666667])
    assert selection.scores[:, 1] == pytest.approx([0.38333333, 1.0, 0.75555556])


def test_classwise_selection_picks_different_models_per_class():
    vals, tests = [table(v) for v in VAL], [table(t) for t in TEST]
    top1 = classwise_selection(vals, LABELS, top_k=1)
    assert top1.members == ((0,), (1,))  # Atelectasis: model 0; Effusion: model 1
    merged = classwise_ensemble(tests, top1)
    assert np.array_equal(merged.values[:, 0], TEST[0][:, 0]) and np.array_equal(merged.values[:, 1], TEST[1][:, 1])

    top2 = classwise_selection(vals, LABELS, top_k=2)
    assert top2.members == ((0, 2), (1, 2))
    merged = classwise_ensemble(tests, top2, merge="arithmetic")
    assert np.allclose(merged.values[:, 0], (TEST[0][:, 0] + TEST[2][:, 0]) / 2)
    assert np.allclose(merged.values[:, 1], (TEST[1][:, 1] + TEST[2][:, 1]) / 2)
    geometric = classwise_ensemble(tests, top2, merge="geometric")
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = 1 / (1 + np.exp(-(logit(TEST[0][:, 0]) + logit(TEST[2][:, 0])) / 2))
    assert np.allclose(geometric.values[:, 0], expected)
    # the model-wise mean uses every member
    assert np.allclose(mean_ensemble(tests).values, (TEST[0] + TEST[1] + TEST[2]) / 3)


def test_undefined_class_falls_back_to_all_members():
    labels = table(np.column_stack([VAL_LABELS[:, 0], np.zeros(6)]))  # Effusion has no positive
    with pytest.warns(UserWarning, match="undefined for 1 class"):
        selection = classwise_selection([table(v) for v in VAL], labels, top_k=1)
    assert selection.members == ((0,), (0, 1, 2)) and list(selection.fallback) == [False, True]
    assert "all 3" in selection.format_table()


def test_rows_and_columns_are_aligned_by_id_and_class_name():
    first = table([[0.9, 0.1], [0.5, 0.3]], ids=["a", "b"])
    # same images and classes, rows and columns in another order, another spelling of Effusion
    second = table([[0.7, 0.5], [0.3, 0.5]], ids=["b", "a"], classes=("Pleural Effusion", "Atelectasis"))
    ids, classes, values = stack_tables([first, second])
    assert list(ids) == ["a", "b"] and classes == CLASSES
    assert np.array_equal(values[1], [[0.5, 0.3], [0.5, 0.7]])
    assert np.allclose(mean_ensemble([first, second], "geometric").values[0, 0], 0.75)  # 0.9 and 0.5 -> 3 / 4


def test_mismatched_ids_or_classes_are_refused():
    first = table([[0.9, 0.1], [0.5, 0.3]], ids=["a", "b"], name="one.csv")
    with pytest.raises(InputError, match=r"one.csv and two.csv do not cover the same images.*'b'.*'c'"):
        mean_ensemble([first, table([[0.9, 0.1], [0.5, 0.3]], ids=["a", "c"], name="two.csv")])
    with pytest.raises(InputError, match=r"do not have the same classes: 1 class\(es\) only in the first \('Effusion'\)"):
        mean_ensemble([first, table([[0.9, 0.1], [0.5, 0.3]], ids=["a", "b"], classes=("Atelectasis", "Mass"),
                                    name="two.csv")])
    with pytest.raises(ConfigError, match="top_k must be between 1 and the number of members"):
        classwise_selection([table(v) for v in VAL], LABELS, top_k=4)


def _write_labels(path, ids, labels):
    rows = ["image_id," + ",".join(CLASSES)]
    rows += [f"{i}," + ",".join(str(int(v)) for v in row) for i, row in zip(ids, labels)]
    path.write_text("\n".join(rows) + "\n")


def test_cli_classwise_with_csv_members(tmp_path, capsys):
    members, vals = [], []
    for m in range(3):
        write_predictions(tmp_path / f"m{m}_test.csv", IDS, CLASSES, TEST[m])
        write_predictions(tmp_path / f"m{m}_val.csv", IDS[::-1], CLASSES, VAL[m][::-1])  # rows in another order
        members.append(str(tmp_path / f"m{m}_test.csv"))
        vals.append(str(tmp_path / f"m{m}_val.csv"))
    _write_labels(tmp_path / "val_labels.csv", IDS, VAL_LABELS)
    _write_labels(tmp_path / "test_labels.csv", IDS, VAL_LABELS)
    out = tmp_path / "ens.csv"
    assert main(["ensemble", *members, "--val", *vals, "--labels-val", str(tmp_path / "val_labels.csv"),
                 "--method", "classwise", "--top-k", "1", "--labels", str(tmp_path / "test_labels.csv"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = read_predictions(out)
    assert np.allclose(result.values[:, 0], TEST[0][:, 0]) and np.allclose(result.values[:, 1], TEST[1][:, 1])
    selection = json.loads((tmp_path / "ens_selection.json").read_text())
    assert selection["per_class"]["Effusion"]["selected"] == [members[1]]
    assert "wrote 6 rows x 2 classes" in printed and "ensemble" in printed

    assert main(["ensemble", *members, "--method", "classwise", "--out", str(out)]) == 2
    assert "needs a validation table per member" in capsys.readouterr().err
    write_predictions(tmp_path / "short.csv", IDS[:5], CLASSES, TEST[0][:5])
    assert main(["ensemble", members[0], str(tmp_path / "short.csv"), "--out", str(out)]) == 2
    assert "do not cover the same images" in capsys.readouterr().err


def test_cli_scores_write_a_metrics_report_with_thresholds_tuned_on_the_ensembled_validation(tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from cxrlt.evaluation.metrics import tune_thresholds

    members, vals = [], []
    for m in range(2):
        members.append(str(write_predictions(tmp_path / f"m{m}_test.csv", IDS, CLASSES, TEST[m])))
        vals.append(str(write_predictions(tmp_path / f"m{m}_val.csv", IDS, CLASSES, VAL[m])))
    _write_labels(tmp_path / "val_labels.csv", IDS, VAL_LABELS)
    test_labels = VAL_LABELS[::-1]
    _write_labels(tmp_path / "test_labels.csv", IDS, test_labels)
    out = tmp_path / "ens.csv"
    common = ["ensemble", *members, "--labels", str(tmp_path / "test_labels.csv"), "--out", str(out), "--no-progress"]
    assert main([*common, "--val", *vals, "--labels-val", str(tmp_path / "val_labels.csv"), "--bootstrap", "30"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "ens_metrics.json").read_text())
    merged = (TEST[0] + TEST[1]) / 2
    assert report["mean"]["auc"] == pytest.approx(np.mean([roc_auc_score(test_labels[:, j], merged[:, j])
                                                            for j in range(2)]))
    expected = tune_thresholds(VAL_LABELS, (VAL[0] + VAL[1]) / 2)
    assert [report["per_class"][c]["threshold"] for c in CLASSES] == pytest.approx(expected.tolist())
    assert report["thresholds"]["tuned_on"] == "val" and report["intervals"]["resamples"] == 30
    assert report["ensemble"] == {"method": "mean", "members": members} and report["split"] == "test"
    assert "thresholds tuned on val" in printed and "bootstrap intervals (30 resamples of images)" in printed

    # without validation tables: the same report, less the tuned thresholds, and the output says why
    assert main(common) == 0
    assert "no F1 at tuned thresholds: a CSV member has no validation table" in capsys.readouterr().out
    report = json.loads((tmp_path / "ens_metrics.json").read_text())
    assert "thresholds" not in report and "f1_tuned" not in report["per_class"]["Effusion"]
    assert main(["ensemble", *members, "--bootstrap", "30", "--out", str(out)]) == 2
    assert "give --labels too" in capsys.readouterr().err
