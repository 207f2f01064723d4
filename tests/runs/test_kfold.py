"""K-fold training: patient-grouped folds, out-of-fold and fold-averaged test predictions, resume."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import cxrlt.runs.finish as evaluate_module
import cxrlt.runs.train as run_module
from cxrlt.cli import main
from cxrlt.config import parse_config
from cxrlt.data.sources import load_table
from cxrlt.runs.kfold import fold_config, kfold, oof_labels
from cxrlt.errors import ConfigError, Interrupted
from cxrlt.evaluation.metrics import UndefinedMetricWarning, compute_metrics
from cxrlt.evaluation.predictions import read_predictions
from tiny_runs import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def test_fold_config_sets_the_split_and_keeps_the_rest(data_dir):
    config = parse_config(tiny_config(data_dir))
    fold = fold_config(config, 3, 2)
    assert (fold.data.split.method, fold.data.split.folds, fold.data.split.fold) == ("kfold", 3, 2)
    assert fold.name == "tiny-fold2" and fold.evaluation.split == "test"
    assert fold.train == config.train and fold.model == config.model


@pytest.mark.slow
def test_two_folds_stop_resume_and_merge(tmp_path, data_dir, monkeypatch):
    raw = tiny_config(data_dir, epochs=1, limit_train_batches=4)
    raw["augment"] = {"tta": ["hflip"]}
    config = parse_config(raw)
    out = tmp_path / "kf"

    # Simulated stop: fold 1 is killed after its training stage, before it is evaluated.
    real_finish = evaluate_module.finish_run

    def stop_in_fold_1(cfg, data, run_dir, last, progress=True):
        if Path(run_dir).name == "1":
            raise KeyboardInterrupt
        return real_finish(cfg, data, run_dir, last, progress=progress)

    monkeypatch.setattr(evaluate_module, "finish_run", stop_in_fold_1)
    with pytest.raises(Interrupted, match=r"fold 1 of 2: stopped during the final evaluation.*continues with "
                                          r"`cxrlt kfold --resume"):
        kfold(config, out, folds=2, progress=False)
    assert (out / "folds/0/fold.json").is_file() and not (out / "folds/1/fold.json").exists()
    assert (out / "folds/1/stages/01-main/done.json").is_file()
    monkeypatch.setattr(evaluate_module, "finish_run", real_finish)

    with pytest.raises(ConfigError, match="holds a k-fold run with another configuration"):
        kfold(config, out, folds=3, progress=False)

    calls = []
    real_train, real_resume = run_module.train, run_module.resume
    monkeypatch.setattr(run_module, "train", lambda *a, **k: calls.append(("train", a[1])) or real_train(*a, **k))
    monkeypatch.setattr(run_module, "resume", lambda *a, **k: calls.append(("resume", a[0])) or real_resume(*a, **k))
    fold0_model = (out / "folds/0/model.safetensors").stat().st_mtime_ns
    result = kfold(config, out, folds=2, progress=False)
    assert calls == [("resume", out / "folds/1")]  # fold 0 skipped, fold 1 continued
    assert (out / "folds/0/model.safetensors").stat().st_mtime_ns == fold0_model

    # Folds: patient-disjoint validation sets that together cover every non-test image once.
    table = load_table(fold_config(config, 2, 0).data)
    pool = table.subset((table.meta["split"] != "test").to_numpy())
    groups = dict(zip(pool.image_ids, pool.patient_groups()))
    val_ids = [set(read_predictions(out / f"folds/{k}/predictions_val.csv").ids) for k in range(2)]
    assert not val_ids[0] & val_ids[1] and val_ids[0] | val_ids[1] == set(pool.image_ids)
    assert not {groups[i] for i in val_ids[0]} & {groups[i] for i in val_ids[1]}
    oof = read_predictions(out / "predictions_oof.csv")
    assert list(oof.ids) == pool.image_ids
    assert list(oof_labels(out).ids) == pool.image_ids
    fold0_val = read_predictions(out / "folds/0/predictions_val.csv")
    row = list(oof.ids).index(fold0_val.ids[0])
    assert np.array_equal(oof.values[row], fold0_val.values[0])

    # Test: the arithmetic mean of the two fold models, scored against the test labels.
    tests = [read_predictions(out / f"folds/{k}/predictions.csv") for k in range(2)]
    merged = read_predictions(out / "predictions.csv")
    assert list(merged.ids) == list(tests[0].ids) == list(tests[1].ids)
    assert np.allclose(merged.values, (tests[0].values + tests[1].values) / 2, atol=1e-7)
    test = table.split("test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected = compute_metrics(test.labels, merged.values, table.classes)
    metrics = json.loads((out / "metrics.json").read_text())
    defined = expected.defined
    assert metrics["mean"]["ap"] == pytest.approx(float(np.mean(expected.ap[defined])), abs=1e-6)
    assert result.test["mean"]["ap"] == metrics["mean"]["ap"] and "out-of-fold" in result.table
    # the folds were evaluated with flip TTA as configured
    assert json.loads((out / "folds/0/metrics.json").read_text())["tta"] == {"views": ["hflip"], "merge": "arithmetic"}

    # The k-fold folder continues (nothing left to train) and serves as an ensemble member.
    assert main(["kfold", "--resume", str(out), "--no-progress"]) == 0
    ensemble = tmp_path / "ensemble.csv"
    assert main(["ensemble", str(out), str(out / "folds/0"), str(out / "folds/1"), "--out", str(ensemble)]) == 0
    assert np.allclose(read_predictions(ensemble).values, (merged.values + tests[0].values + tests[1].values) / 3,
                       atol=1e-6)
    # class-wise selection reads validation tables: out-of-fold for a k-fold folder, the val split for a run
    assert main(["ensemble", str(out), str(out), "--method", "classwise", "--out", str(ensemble)]) == 0
    assert np.allclose(read_predictions(ensemble).values, merged.values, atol=1e-7)
    assert main(["ensemble", str(out / "folds/0"), str(out / "folds/1"), "--method", "classwise",
                 "--out", str(ensemble)]) == 2  # their validation folds are different images
