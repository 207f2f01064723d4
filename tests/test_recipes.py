"""The recipes in configs/: each parses as written, and each runs end to end in smoke mode.

The smoke runs (`cxrlt.recipes.smoke_config`) keep every method setting of a
recipe and swap only data, backbone size, epochs and batch sizes, so a change
anywhere in the toolkit that breaks a recipe fails here. The glob picks up a
new recipe automatically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlt.config import load_config, load_yaml, parse_config
from cxrlt.errors import ConfigError
from cxrlt.labels import CXRLT2023, NIH14
from cxrlt.recipes import smoke_backbone, smoke_config
from tiny_text_encoder import make_tiny_bert

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(REPO.glob("configs/**/*.yaml"))
IDS = [str(path.relative_to(REPO / "configs")) for path in RECIPES]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Synthetic images and label CSVs shared by every smoke config of this module."""
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory) -> Path:
    """A tiny local BERT standing in for PubMedBERT (no hub access in tests)."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert"))


def smoke_of(path: Path, workdir: Path, text_encoder: Path):
    raw = load_yaml(path)
    original = parse_config(raw, origin=str(path))
    return original, parse_config(smoke_config(raw, workdir, text_encoder=text_encoder), origin=f"{path} (smoke)")


# ------------------------------------------------------------------ parsing
def test_there_is_a_recipe_per_seed_paper_and_names_are_unique():
    folders = {path.parent.name for path in RECIPES}
    assert {"thesis", "aggregate", "mlgcn", "augment_ensemble", "bag_of_tricks"} <= folders
    thesis = {path.stem for path in RECIPES if path.parent.name == "thesis"}
    assert thesis == {"full", "bce", "focal", "asl", "cal_no_decoupling", "cal_no_margin"}  # Table 3 rows
    names = [load_yaml(path)["name"] for path in RECIPES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_parses_as_written(path):
    config = load_config(path)
    assert config.data.sources and config.name


def test_thesis_recipe_holds_the_papers_numbers():
    config = load_config(REPO / "configs/thesis/full.yaml")
    assert config.model.backbone == "swin_base_patch4_window7_224"
    assert (config.loss.name, config.loss.params["margin"]) == ("class_aware", 0.2)
    assert config.train.optimizer.params["lr"] == 1e-4 and config.train.optimizer.params["weight_decay"] == 5e-4
    assert (config.train.batch_size, config.train.epochs) == (32, 30)
    first, second = config.stage_list()
    assert second.freeze_backbone and not first.freeze_backbone
    no_decoupling = load_config(REPO / "configs/thesis/cal_no_decoupling.yaml")
    assert len(no_decoupling.stage_list()) == 1
    assert load_config(REPO / "configs/thesis/cal_no_margin.yaml").loss.params["margin"] == 0.0


def test_headers_say_what_weight_balancing_and_geometric_mean_are_and_the_configs_do_it():
    """Seed 003's "weight balancing" is the focal alpha balancing; seed 004's "geometric mean" the renormalised one."""
    import torch

    from cxrlt.losses import build as build_loss

    for path in sorted(REPO.glob("configs/augment_ensemble/*.yaml")):
        header, config = path.read_text().split("\nname:")[0], load_config(path)
        assert "not reproduced" not in header and "apply_class_balancing=True" in header
        assert (config.loss.name, config.loss.params["alpha"]) == ("focal", 0.25)
        loss = build_loss("focal", **{**config.loss.params, "label_smoothing": 0.0})
        logits = torch.zeros(1, 2, dtype=torch.float64)  # p = 0.5: every focal factor but alpha is equal
        terms = loss.per_element(logits, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
        # alpha on the positive term, 1 - alpha on the negative one
        assert float(terms[0, 0] / terms[0, 1]) == pytest.approx(0.25 / 0.75)
    for path in sorted(REPO.glob("configs/bag_of_tricks/*.yaml")):
        header, config = path.read_text().split("\nname:")[0], load_config(path)
        assert "renormalised geometric mean" in header and "sigmoid of the mean logit" in header
        assert config.augment.tta_merge == "geometric"


def test_overrides_point_a_recipe_at_the_users_data():
    config = load_config(REPO / "configs/bag_of_tricks/resnet50_merged.yaml",
                         ["data.sources.0.labels=/data/cxr-lt.csv", "data.sources.2.images=/data/chexpert"])
    assert config.data.sources[0].params["labels"] == Path("/data/cxr-lt.csv")
    assert config.data.sources[2].params["images"] == Path("/data/chexpert")
    assert config.data.sources[1].params["labels"] == Path("datasets/nih/Data_Entry_train_val.csv")
    with pytest.raises(ConfigError, match="not an index of a 3-item list"):
        load_config(REPO / "configs/bag_of_tricks/resnet50_merged.yaml", ["data.sources.3.labels=x.csv"])


# --------------------------------------------------------------- smoke config
def test_smoke_backbones_stay_in_the_family():
    assert smoke_backbone("swin_base_patch4_window7_224") == "swin_tiny_patch4_window7_224"
    assert smoke_backbone("efficientnet_b3") == "tinynet_e"
    assert smoke_backbone("tf_efficientnetv2_s") == "tf_efficientnetv2_b0"
    assert smoke_backbone("convnext_small") == "convnext_atto"
    assert smoke_backbone("resnet101") == smoke_backbone("resnet50") == "resnet10t"
    assert smoke_backbone("densenet121") == "densenet121"
    assert smoke_backbone("vit_small_patch16_224") == "vit_small_patch16_224"


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_smoke_config_keeps_the_method(path, workdir, text_encoder):
    original, smoke = smoke_of(path, workdir, text_encoder)
    assert smoke.loss == original.loss
    assert smoke.model.pooling == original.model.pooling and smoke.model.in_chans == original.model.in_chans
    head, smoke_head = original.model.head.model_dump(), smoke.model.head.model_dump()
    if isinstance(head.get("embeddings"), dict) and head["embeddings"].get("method") == "text":
        assert smoke_head["embeddings"].pop("model") == str(text_encoder)
        head["embeddings"].pop("model")
    assert smoke_head == head
    for section in ("optimizer", "schedule", "sampler"):
        assert getattr(smoke.train, section) == getattr(original.train, section)
    assert (smoke.train.monitor, smoke.train.early_stopping_patience) == (
        original.train.monitor, original.train.early_stopping_patience)
    assert len(smoke.stage_list()) == len(original.stage_list())
    same = ("name", "init_from", "freeze_backbone", "reinit_head", "tau_normalise", "sampler", "loss", "optimizer",
            "schedule")
    for ours, theirs in zip(smoke.stage_list(), original.stage_list()):
        assert {k: getattr(ours, k) for k in same} == {k: getattr(theirs, k) for k in same}
        assert ours.epochs in (None, 1)
    assert smoke.train.epochs == 1
    assert (smoke.augment.mixing, smoke.augment.tta, smoke.augment.tta_merge) == (
        original.augment.mixing, original.augment.tta, original.augment.tta_merge)
    assert [t.name for t in smoke.augment.train] == [t.name for t in original.augment.train]
    assert [t.name for t in smoke.augment.eval] == [t.name for t in original.augment.eval]
    assert (smoke.data.classes, smoke.data.unannotated, smoke.data.split) == (
        original.data.classes, original.data.unannotated, original.data.split)
    assert len(smoke.data.sources) == len(original.data.sources)
    assert smoke.evaluation.groups == original.evaluation.groups


def test_smoke_scales_every_pixel_size_by_one_factor(workdir, text_encoder):
    _, thesis = smoke_of(REPO / "configs/thesis/full.yaml", workdir, text_encoder)
    # 256 stored -> centre crop 224 becomes 32 * 256 / 224 = 36.57 -> 37, and the crop 32.
    assert (thesis.data.images.size, thesis.data.images.store_size) == (32, 37)
    assert thesis.augment.train[0].name == "center_crop" and thesis.augment.train[0].params["size"] == 32
    assert [(t.name, t.params["size"]) for t in thesis.augment.eval] == [("center_crop", 32)]
    _, b3 = smoke_of(REPO / "configs/aggregate/efficientnet_b3.yaml", workdir, text_encoder)
    first, second = b3.stage_list()
    # progressive resizing 300 -> 600 with batch 32 -> 16 keeps "double the size, half the batch"
    assert (b3.data.images.size, b3.data.images.store_size, second.image_size) == (32, 64, 64)
    assert (b3.train.batch_size, second.batch_size) == (16, 8)


def test_smoke_data_keeps_each_sources_label_space_and_split(workdir, text_encoder):
    from cxrlt.data.sources import load_table

    _, smoke = smoke_of(REPO / "configs/bag_of_tricks/resnet50_merged.yaml", workdir, text_encoder)
    table = load_table(smoke.data)
    assert table.classes == CXRLT2023
    frames = [pd.read_csv(spec.params["labels"]) for spec in smoke.data.sources]
    mimic, nih, chexpert = frames
    assert set(mimic["split"]) == {"train", "val", "test"}
    assert "split" not in nih and "split" not in chexpert  # no split in the recipe: training pool
    # NIH and CheXpert rows are all training rows; validation and test come from the MIMIC slice only
    ids = table.meta["image_id"].astype(str)
    in_nih = ids.isin(nih["image_id"].astype(str)).to_numpy()
    assert set(table.meta.loc[in_nih, "split"]) == {"train"}
    assert not set(mimic["patient_id"]) & set(nih["patient_id"])
    # unannotated: zero -> a CXR-LT class NIH lacks is 0 on NIH rows, not missing
    calcification = table.labels[in_nih, CXRLT2023.index("Calcification of the Aorta")]
    assert np.all(calcification == 0)
    # a class NIH has keeps the synthetic film's own label ("Effusion" -> "Pleural Effusion")
    synthetic = pd.read_csv(workdir / "synthetic" / "labels.csv", index_col="image_id")
    effusion = table.labels[in_nih, CXRLT2023.index("Pleural Effusion")]
    np.testing.assert_array_equal(effusion, synthetic.loc[ids[in_nih], "Effusion"].to_numpy())
    # NIH annotates No Finding (its images without any finding), so it is read, not set to 0
    normal = (synthetic.loc[ids[in_nih], list(NIH14)] == 0).all(axis=1).to_numpy()
    assert normal.any() and not normal.all()
    np.testing.assert_array_equal(table.labels[in_nih, CXRLT2023.index("No Finding")], normal)
    # every class of the label space has positives to train on
    train = table.meta["split"].to_numpy() == "train"
    assert (np.nansum(table.labels[train], axis=0) > 0).all()


# ------------------------------------------------------------------- smoke runs
@pytest.fixture
def no_plots(monkeypatch):
    """Skip matplotlib in smoke runs (~30 s a run here); report plots are tested in test_training."""
    import cxrlt.runs.finish as evaluate
    from cxrlt.evaluation.scoring import Scores

    monkeypatch.setattr(Scores, "write_plots", lambda *args, **kwargs: [])
    monkeypatch.setattr(evaluate, "plot_training_curves", lambda *args, **kwargs: None)
    monkeypatch.setattr(evaluate, "save_plots", lambda *args, **kwargs: [])


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_runs_in_smoke_mode(path, workdir, text_encoder, tmp_path, no_plots, one_thread):
    from cxrlt.runs.train import train

    _, smoke = smoke_of(path, workdir, text_encoder)
    result = train(smoke, tmp_path / "run", progress=False)
    run = result.run_dir
    stages = smoke.stage_list()
    for i, stage in enumerate(stages, start=1):
        assert (run / "stages" / f"{i:02d}-{stage.name}" / "done.json").is_file()
    meta = json.loads((run / "model.json").read_text())
    assert meta["image_size"] == (stages[-1].image_size or smoke.data.images.size)
    assert meta["classes"] == _classes(smoke)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == smoke.evaluation.split
    predictions = pd.read_csv(run / "predictions.csv")
    probs = predictions.drop(columns=predictions.columns[0]).to_numpy()
    assert probs.shape[1] == len(meta["classes"]) and np.all((probs >= 0) & (probs <= 1))
    auc = metrics["mean"]["auc"]
    assert auc is None or (isinstance(auc, float) and not math.isnan(auc))


def _classes(config) -> list[str]:
    from cxrlt.labels import resolve_classes

    return list(resolve_classes(config.data.classes)) if config.data.classes is not None else list(NIH14)


@pytest.mark.slow
def test_cli_smoke_flag_runs_a_recipe_without_its_data(tmp_path, no_plots, one_thread, capsys):
    from cxrlt.cli import main

    out = tmp_path / "run"
    assert main(["train", str(REPO / "configs/nih128-quickstart.yaml"), "--smoke", "--no-progress",
                 "--out", str(out)]) == 0
    saved = yaml_load(out / "config.yaml")
    assert saved["name"] == "nih128-quickstart-smoke" and saved["model"]["backbone"] == "resnet10t"
    assert saved["data"]["sources"][0]["name"] == "csv"
    assert "run folder" in capsys.readouterr().out


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
