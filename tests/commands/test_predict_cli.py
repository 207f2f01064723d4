"""`cxrlt predict`: files and folders in, one CSV row per image out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlt.cli import main
from cxrlt.config import ModelConfig
from cxrlt.data.images import load_image
from cxrlt.evaluation.predictions import read_predictions
from cxrlt.models.build import build_model
from cxrlt.inference.saved_model import export_model
from cxrlt.models.card import ModelCard
from saved_models import COMMAND_CLASSES, command_model, write_png as _write_png

CLASSES = COMMAND_CLASSES


@pytest.fixture()
def saved_model(tmp_path):
    return command_model(tmp_path / "run", thresholds=[0.5, 0.5, 0.5])


def test_predict_folder_and_file_matches_the_model(tmp_path, saved_model, capsys):
    run, model = saved_model
    folder = tmp_path / "scans" / "nested"
    folder.mkdir(parents=True)
    _write_png(folder / "a.png", 1)
    _write_png(tmp_path / "b.png", 2)
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(tmp_path / "scans"), str(tmp_path / "b.png"), "--out", str(out),
                 "--no-progress"]) == 0
    table = read_predictions(out)
    assert list(table.ids) == ["nested/a.png", str(tmp_path / "b.png")]
    assert table.classes == tuple(CLASSES)
    # same geometry as training: decode at the stored size, then resize to the model input
    from cxrlt.data.transforms import resize_to

    for row, path in zip(table.values, [folder / "a.png", tmp_path / "b.png"]):
        pixels = torch.from_numpy(resize_to(load_image(path, 64), 48))[None, None]
        with torch.no_grad():
            expected = torch.sigmoid(model(pixels))[0].numpy()
        assert np.allclose(row, expected, atol=1e-5)
    assert "wrote 2 rows x 3 classes" in capsys.readouterr().out


def test_unreadable_file_stops_without_output_unless_skipped(tmp_path, saved_model, capsys):
    run, _ = saved_model
    _write_png(tmp_path / "good.png", 3)
    (tmp_path / "bad.png").write_bytes(b"")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(tmp_path), "--out", str(out), "--no-progress"]) == 2
    assert "bad.png" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(run), str(tmp_path), "--out", str(out), "--no-progress", "--skip-bad"]) == 0
    assert list(read_predictions(out).ids) == ["good.png"]


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    _write_png(tmp_path / "a.png", 4)
    assert main(["predict", str(tmp_path / "nothing"), str(tmp_path / "a.png"), "--no-progress"]) == 2
    assert "no saved model here" in capsys.readouterr().err


def test_classes_option_picks_columns_by_canonical_name(tmp_path, saved_model):
    run, _ = saved_model
    _write_png(tmp_path / "a.png", 5)
    full, picked = tmp_path / "full.csv", tmp_path / "picked.csv"
    assert main(["predict", str(run), str(tmp_path / "a.png"), "--out", str(full), "--no-progress"]) == 0
    assert main(["predict", str(run), str(tmp_path / "a.png"), "--out", str(picked), "--no-progress",
                 "--classes", "Hernia", "Pleural Effusion"]) == 0
    whole, some = read_predictions(full), read_predictions(picked)
    assert some.classes == ("Hernia", "Pleural Effusion")
    assert np.array_equal(some.values, whole.values[:, [2, 1]])


def test_untrained_class_needs_a_query_head(tmp_path, saved_model, capsys):
    run, _ = saved_model
    _write_png(tmp_path / "a.png", 5)
    assert main(["predict", str(run), str(tmp_path / "a.png"), "--out", str(tmp_path / "p.csv"),
                 "--classes", "Pneumomediastinum"]) == 2
    assert "not trained on 'Pneumomediastinum'" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_zero_shot_class_from_the_cli_equals_the_head(tmp_path):
    from tiny_text_encoder import make_tiny_bert

    from cxrlt.data.transforms import resize_to

    bert = make_tiny_bert(tmp_path / "bert")
    torch.manual_seed(0)
    head = {"name": "query", "dim": 32, "layers": 1, "heads": 4, "ffn": 64,
            "embeddings": {"method": "text", "model": str(bert)}}
    config = ModelConfig(backbone="resnet10t", head=head)
    train_labels = (np.random.default_rng(0).random((50, 3)) < 0.3).astype(np.float32)
    model = build_model(config, len(CLASSES), context={"class_names": CLASSES, "train_labels": train_labels}).eval()
    export_model(model, tmp_path / "run", ModelCard(model=config, classes=CLASSES, image_size=48, stored_size=64))
    _write_png(tmp_path / "a.png", 6)
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--out", str(out), "--no-progress",
                 "--classes", "Effusion", "Mass"]) == 0
    table = read_predictions(out)
    pixels = torch.from_numpy(resize_to(load_image(tmp_path / "a.png", 64), 48))[None, None]
    with torch.no_grad():
        expected = torch.sigmoid(model.head.score_classes(model.features(pixels), ["Effusion", "Mass"]))[0]
        trained = torch.sigmoid(model(pixels))[0, 1]
    assert np.allclose(table.values[0], expected.numpy(), atol=1e-5)
    assert np.isclose(table.values[0, 0], trained.item(), atol=1e-5)  # a trained class scores as without zero-shot


def test_per_study_table_from_dicom_study_uids(tmp_path, saved_model, capsys):
    from dicom_files import write_dicom

    from cxrlt.evaluation.studies import aggregate_studies

    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, study in (("a1", "1.2.3"), ("a2", "1.2.3"), ("b1", "1.2.4")):
        write_dicom(folder / f"{name}.dcm", rng.integers(0, 4096, (64, 64), dtype=np.uint16), BitsStored=12,
                    StudyInstanceUID=study)
    _write_png(folder / "c.png", 3)
    out, studies = tmp_path / "p.csv", tmp_path / "s.csv"
    assert main(["predict", str(saved_model[0]), str(folder), "--out", str(out), "--studies-out", str(studies),
                 "--study-merge", "mean", "--no-progress"]) == 0
    assert "1 image(s) without a study id left out" in capsys.readouterr().out
    images = read_predictions(out)
    by_study = read_predictions(studies, "study_id")
    assert list(by_study.ids) == ["1.2.3", "1.2.4"]
    order = [list(images.ids).index(i) for i in ("a1.dcm", "a2.dcm", "b1.dcm")]
    expected = aggregate_studies(["s", "s", "t"], images.values[order], method="mean").probs
    np.testing.assert_allclose(by_study.values, expected, rtol=1e-6)
