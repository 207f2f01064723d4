"""`augment.eval`: one evaluation view for validation, test, `cxrlt predict` and the saved model."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from cxrlt.cli import main
from cxrlt.config import parse_config
from cxrlt.data.store import DecodingStore
from cxrlt.data.transforms import eval_pipeline
from cxrlt.errors import InputError
from cxrlt.evaluation.metrics import monitor_metrics
from cxrlt.evaluation.predictions import read_predictions
from cxrlt.training.data import load_run_data, warn_whole_image_evaluation
from cxrlt.inference.saved_model import load_model
from cxrlt.models.card import ModelCard
from cxrlt.inference.predict import predict_probabilities
from cxrlt.runs.train import train
from cxrlt.training.tau import mean_f1_at_half

CROP = {"name": "center_crop", "size": 36}


def cropped_config(data_dir, **augment) -> dict:
    """120 synthetic 48-px films stored at 40 px, trained on the central 36 px, input 32 px; one short epoch.

    ASL (which down-weights easy negatives) lifts probabilities over 0.5 even
    this early, so F1 at 0.5, what tau-normalisation is tuned on, varies with tau.
    """
    return {
        "name": "eval-view",
        "data": {
            "sources": [{"name": "synthetic", "out": str(data_dir), "n_images": 120, "image_size": 48, "seed": 5}],
            "split": {"method": "random", "val_fraction": 0.25, "test_fraction": 0.2, "seed": 0},
            "images": {"size": 32, "store_size": 40},
        },
        "model": {"backbone": "resnet10t"},
        "loss": {"name": "asl"},
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "monitor": "auc", "limit_train_batches": 2,
                  "optimizer": {"name": "adamw", "lr": 0.003}},
        "stages": [{"name": "main", "tau_normalise": True}],
        "augment": {"train": [CROP, {"name": "hflip", "p": 0.5}], "eval": [CROP], **augment},
        "evaluation": {"bootstrap": 0, "report": False},
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory, data_dir):
    config = parse_config(cropped_config(data_dir))
    return config, train(config, tmp_path_factory.mktemp("runs") / "run", progress=False).run_dir


@pytest.mark.slow
def test_validation_predict_and_the_saved_model_give_the_same_probabilities(cropped_run, tmp_path):
    config, run = cropped_run
    val = load_run_data(config).part("val")
    saved = read_predictions(run / "predictions_val.csv")
    assert list(saved.ids) == list(val.image_ids)
    model, card = load_model(run)
    assert card.eval_transforms == [CROP] and card.stored_size == 40 and card.image_size == 32
    # the saved model on the same files, through its own model.json
    paths = [str(p) for p in val.image_paths()]
    store = DecodingStore(paths, card.stored_size)
    loaded = predict_probabilities(model, store, card.image_size, progress=False, device=torch.device("cpu"),
                                   eval_transforms=card.eval_transforms)
    np.testing.assert_allclose(loaded, saved.values, atol=1e-6)
    out = tmp_path / "predict.csv"
    assert main(["predict", str(run), *paths, "--out", str(out), "--no-progress"]) == 0
    predicted = read_predictions(out)
    assert list(predicted.ids) == paths
    np.testing.assert_allclose(predicted.values, saved.values, atol=1e-6)
    # without the centre crop the same model gives other numbers: the crop really is applied
    whole = predict_probabilities(model, store, card.image_size, progress=False, device=torch.device("cpu"))
    assert np.abs(whole - saved.values).max() > 1e-3
    # validation during training saw the same view: its logged mean AUC is that of the saved predictions
    best = json.loads((run / "stages/01-main/done.json").read_text())["best_score"]
    assert best == pytest.approx(monitor_metrics(val.labels, saved.values)["auc"], abs=1e-6)


@pytest.mark.slow
def test_tau_choice_and_score_table_are_in_the_metrics(cropped_run):
    config, run = cropped_run
    meta = json.loads((run / "model.json").read_text())
    val = load_run_data(config).part("val")
    for name in ("metrics.json", "metrics_val.json"):
        tuning = json.loads((run / name).read_text())["tau_normalisation"]
        assert tuning == meta["tau_normalisation"]
    scores = tuning["scores"]
    assert "F1 at threshold 0.5" in tuning["criterion"] and len(scores) == 21
    assert scores[str(tuning["tau"])] == max(scores.values()) > min(scores.values())  # measured 0.155 vs 0.072
    # the table was scored on the evaluation view: the chosen tau's score is the F1 of the saved predictions,
    # and tau 0 scores as the model without tau-normalisation does
    saved = read_predictions(run / "predictions_val.csv").values
    assert scores[str(tuning["tau"])] == pytest.approx(mean_f1_at_half(val.labels, saved), abs=1e-9)
    model, card = load_model(run)
    model.head.tau.fill_(0.0)
    plain = predict_probabilities(model, DecodingStore(val.image_paths(), 40), 32, progress=False,
                                  device=torch.device("cpu"), eval_transforms=card.eval_transforms)
    assert scores["0.0"] == pytest.approx(mean_f1_at_half(val.labels, plain), abs=1e-9)


def test_validation_loader_applies_the_eval_transforms(tmp_path, data_dir):
    from cxrlt.config import SamplerSpec
    from cxrlt.data.transforms import build_pipeline
    from cxrlt.training.data import StageDataModule

    config = parse_config(cropped_config(data_dir))
    data = load_run_data(config)
    module = StageDataModule(data, 32, 8, SamplerSpec(name="instance"), build_pipeline([], 32), 0, 0)
    images, _, _ = next(iter(module.val_dataloader()))
    stored = data.store("val", 40)
    expected = np.stack([eval_pipeline([CROP], 32)(stored[i]) for i in range(len(images))])
    np.testing.assert_array_equal(images[:, 0].numpy(), expected)
    # the crop is not a no-op on these images
    assert not np.array_equal(expected, np.stack([eval_pipeline([], 32)(stored[i]) for i in range(len(images))]))


def test_a_train_crop_without_eval_transforms_warns_at_run_start(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="cxrlt.training.data"):
        warn_whole_image_evaluation(parse_config(cropped_config(data_dir, eval=[])))
    assert "augment.train has center_crop" in caplog.text and "whole 40-px stored image" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cxrlt.training.data"):
        warn_whole_image_evaluation(parse_config(cropped_config(data_dir)))  # eval set: nothing to say
        warn_whole_image_evaluation(parse_config(cropped_config(  # no fixed-size crop: the whole image is right
            data_dir, train=[{"name": "random_resized_crop", "scale": [0.7, 1.0]}], eval=[])))
    assert caplog.text == ""


def test_model_json_without_eval_transforms_means_none_and_a_random_one_is_refused(tmp_path):
    from cxrlt.config import ModelConfig
    from cxrlt.models.build import build_model
    from cxrlt.inference.saved_model import export_model

    config = ModelConfig(backbone="resnet10t")
    export_model(build_model(config, 2), tmp_path,
                 ModelCard(model=config, classes=["A", "B"], image_size=32, stored_size=40, eval_transforms=[CROP]))
    assert load_model(tmp_path)[1].eval_transforms == [CROP]
    meta = json.loads((tmp_path / "model.json").read_text())
    meta.pop("eval_transforms")  # saved before evaluation transforms existed
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert load_model(tmp_path)[1].eval_transforms == []
    meta["eval_transforms"] = [{"name": "random_crop", "size": 30}]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"model.json: eval_transforms: .*random transform random_crop \(item 0\).*"
                                         r"choose from: center_crop, resize"):
        load_model(tmp_path)
