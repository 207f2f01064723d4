"""Localisation against boxes: geometry, pointing game, IoU, the NIH box file, and `cxrlt localise`."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import binomtest
from quadrant_models import QuadrantBackbone, SquaredMeanHead, quadrant_model

from cxrlt.cli import main
from cxrlt.config import ModelConfig
from cxrlt.data.images import load_image
from cxrlt.data.transforms import eval_pipeline, resize_to
from cxrlt.errors import ConfigError, InputError
from cxrlt.explain.localisation import (
    box_coverage,
    box_to_input,
    heat_iou,
    index_images,
    localise,
    peak,
    pointing_hit,
    read_boxes,
    wilson_interval,
)
from cxrlt.models.build import CxrModel, build_model
from cxrlt.inference.saved_model import export_model
from cxrlt.models.card import ModelCard

pytestmark = pytest.mark.usefixtures("one_thread")

NIH_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


# ----------------------------------------------------------------- geometry
def test_nih_box_scaled_to_a_thumbnail_and_the_model_input():
    # 1024-px frame -> 128-px file (x 1/8) -> 64-px input (x 1/2)
    assert box_to_input((512, 256, 128, 64), (128, 128), eval_pipeline([], 64), 64) == (32.0, 16.0, 40.0, 20.0)
    # the full-size file at a 224 input
    assert box_to_input((0, 512, 1024, 256), (1024, 1024), eval_pipeline([], 224), 224) == (0.0, 112.0, 224.0, 168.0)


def test_box_follows_the_centre_crop_of_a_non_square_file():
    # decoded 100 x 200 (H x W): x scaled by 200/1024, y by 100/1024; crop keeps columns 50..150; input 50 (x 1/2)
    x0, y0, x1, y1 = box_to_input((512, 512, 256, 256), (100, 200), eval_pipeline([], 50), 50)
    assert x0 == pytest.approx((512 * 200 / 1024 - 50) / 2) and x1 == pytest.approx((768 * 200 / 1024 - 50) / 2)
    assert y0 == pytest.approx(512 * 100 / 1024 / 2) and y1 == pytest.approx(768 * 100 / 1024 / 2)
    # a box left of the crop is clipped to the image edge
    assert box_to_input((0, 0, 100, 100), (100, 200), eval_pipeline([], 50), 50)[::2] == (0.0, 0.0)


def test_box_follows_the_evaluation_centre_crop():
    # 1024 file stored at 256 (x 1/4), augment.eval centre crop 224 (offset 16), input 112 (x 1/2)
    pipeline = eval_pipeline([{"name": "center_crop", "size": 224}], 112)
    assert box_to_input((512, 256, 256, 128), (1024, 1024), pipeline, 256) == (56.0, 24.0, 88.0, 40.0)
    # the whole image: the part outside the crop is clipped away
    assert box_to_input((0, 0, 1024, 1024), (1024, 1024), pipeline, 256) == (0.0, 0.0, 112.0, 112.0)
    # a resize before the crop: 256 -> 128, centre 112 (offset 8), input 112 (x 1)
    resized = eval_pipeline([{"name": "resize", "size": 128}, {"name": "center_crop", "size": 112}], 112)
    assert box_to_input((512, 256, 256, 128), (1024, 1024), resized, 256) == (56.0, 24.0, 88.0, 40.0)


def test_box_coverage_is_the_covered_fraction_of_each_pixel():
    cover = box_coverage((0.5, 0.0, 2.0, 1.5), (3, 3))
    assert np.allclose(cover, [[0.5, 1.0, 0.0], [0.25, 0.5, 0.0], [0.0, 0.0, 0.0]])


def test_iou_of_a_thresholded_map_and_a_box():
    heat = np.zeros((4, 4))
    heat[:2, :2] = 0.9  # region at t = 0.5: the top-left 2 x 2 block
    heat[3, 3] = 0.4
    assert heat_iou(heat, (0, 0, 2, 2), 0.5) == pytest.approx(1.0)
    assert heat_iou(heat, (0, 0, 4, 2), 0.5) == pytest.approx(4 / 8)
    assert heat_iou(heat, (1, 1, 3, 3), 0.5) == pytest.approx(1 / 7)
    # a box of a quarter pixel inside the region: intersection 0.25, union 4
    assert heat_iou(heat, (0.5, 0.5, 1.0, 1.0), 0.5) == pytest.approx(0.25 / 4)
    # a lower threshold adds pixel (3, 3): region 5
    assert heat_iou(heat, (0, 0, 2, 2), 0.3) == pytest.approx(4 / 5)
    assert heat_iou(heat, (2, 0, 4, 2), 0.95) == 0.0  # empty region, disjoint box


def test_pointing_game():
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0  # peak at pixel centre (x, y) = (2.5, 1.5)
    heat[3, 0] = 1.0  # a later tie: the first maximum in raster order counts
    assert peak(heat) == (2.5, 1.5)
    assert pointing_hit(heat, (2, 1, 3, 2)) and not pointing_hit(heat, (3, 1, 4, 2))
    assert pointing_hit(heat, (3, 1, 4, 2), tolerance=0.5)
    assert peak(np.zeros((4, 4))) is None and not pointing_hit(np.zeros((4, 4)), (0, 0, 4, 4))


@pytest.mark.parametrize("hits, n", [(8, 10), (0, 5), (50, 50), (1, 3)])
def test_wilson_interval_matches_scipy(hits, n):
    reference = binomtest(hits, n).proportion_ci(method="wilson")
    assert wilson_interval(hits, n) == pytest.approx((reference.low, reference.high), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# ---------------------------------------------------------------- box files
def test_read_nih_box_file_with_its_odd_header(tmp_path):
    text = NIH_HEADER + "a.png,Atelectasis,10.5,20,30,40\nb.png,Infiltrate,1,2,3,4\n\n"
    (tmp_path / "boxes.csv.gz").write_bytes(gzip.compress(text.encode()))
    boxes = read_boxes(tmp_path / "boxes.csv.gz")
    assert boxes[["image_id", "finding", "x", "y", "w", "h", "line"]].values.tolist() == [
        ["a.png", "Atelectasis", 10.5, 20.0, 30.0, 40.0, 2], ["b.png", "Infiltrate", 1.0, 2.0, 3.0, 4.0, 3]]


@pytest.mark.parametrize("row, message", [("a.png,Mass,1,2,x,4", "line 3: box coordinates must be numbers"),
                                          ("a.png,Mass,1,2,0,4", "line 3: a box needs"),
                                          ("a.png,Mass,1,2", "line 3: expected 6 fields")])
def test_bad_box_rows_name_their_line(tmp_path, row, message):
    (tmp_path / "b.csv").write_text(NIH_HEADER + "a.png,Mass,1,2,3,4\n" + row + "\n")
    with pytest.raises(InputError, match=message):
        read_boxes(tmp_path / "b.csv")
    with pytest.raises(InputError, match="not found"):
        read_boxes(tmp_path / "none.csv")


def test_real_nih_box_file_and_the_thumbnails_that_have_boxes(shared_data):
    boxes = read_boxes(shared_data / "nih" / "BBox_List_2017.csv.gz")
    assert len(boxes) == 984 and boxes["image_id"].nunique() == 880
    assert boxes["finding"].value_counts().to_dict() == {
        "Atelectasis": 180, "Effusion": 153, "Cardiomegaly": 146, "Infiltrate": 123, "Pneumonia": 120,
        "Pneumothorax": 98, "Mass": 85, "Nodule": 79}
    assert (boxes["x"] + boxes["w"]).max() <= 1024 and (boxes["y"] + boxes["h"]).max() <= 1024
    index = index_images([shared_data / "nih" / "images128"])
    present = boxes[boxes["image_id"].isin(index)]
    assert present["finding"].value_counts().to_dict() == {
        "Cardiomegaly": 9, "Pneumonia": 9, "Atelectasis": 7, "Effusion": 7, "Nodule": 5, "Pneumothorax": 5,
        "Infiltrate": 4, "Mass": 4}


# ------------------------------------------------------- known-answer model
QUADRANT_CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration"]  # class k <- quadrant k


def _thumbnail(path, bright_quadrant: int | None = None):
    """128-px PNG, gray 150, one quadrant (0 TL, 1 TR, 2 BL, 3 BR) at 255."""
    image = np.full((128, 128), 150, np.uint8)
    if bright_quadrant is not None:
        rows, cols = divmod(bright_quadrant, 2)
        image[rows * 64:(rows + 1) * 64, cols * 64:(cols + 1) * 64] = 255
    Image.fromarray(image).save(path)
    return path


def _box_frame(rows):
    return pd.DataFrame([(*row, i + 2) for i, row in enumerate(rows)],
                        columns=["image_id", "finding", "x", "y", "w", "h", "line"])


def test_localise_on_a_model_whose_answer_is_known(tmp_path):
    """Class k sees only quadrant k; the top-right quadrant of a.png is bright.

    Cardiomegaly (class 1) on a.png, box = the top-right quadrant: the map is 1
    on the quadrant and 0 elsewhere (bilinear seam between the 8-px cells), so
    the peak is inside (hit). At t = 0.5 the region is the quadrant except 6
    pixels at its inner corner, where the product of the two seam weights
    (0.5625, 0.6875, 0.8125 for the three pixels nearest the seam) falls
    below 0.5: rows 31/30/29 lose 3/2/1 pixels. IoU = 1018 / 1024.
    Effusion (class 2, bottom-left) boxed in the top-right: its map peaks in
    the bottom-left (miss) and is 0 on the box (IoU 0).
    """
    model = quadrant_model()
    meta = ModelCard(model=ModelConfig(backbone="resnet10t"), classes=QUADRANT_CLASSES, image_size=64)
    paths = {"a.png": _thumbnail(tmp_path / "a.png", 1), "b.png": _thumbnail(tmp_path / "b.png")}
    boxes = _box_frame([("a.png", "Cardiomegaly", 512, 0, 512, 512), ("b.png", "Effusion", 512, 0, 512, 512),
                        ("c.png", "Infiltrate", 0, 0, 100, 100), ("a.png", "Nodule", 0, 0, 10, 10)])
    result = localise(model, meta, boxes, paths, thresholds=[0.5], progress=False)
    assert result.method == "cam" and result.missing_images == ["c.png"]
    assert result.unknown_findings == {"Nodule": 1}
    records = result.records.set_index("finding")
    assert records.loc["Cardiomegaly", ["x0", "y0", "x1", "y1"]].tolist() == [32.0, 0.0, 64.0, 32.0]
    assert bool(records.loc["Cardiomegaly", "hit"]) and not bool(records.loc["Effusion", "hit"])
    assert records.loc["Cardiomegaly", "iou@0.5"] == pytest.approx(1018 / 1024)
    assert records.loc["Effusion", "iou@0.5"] == 0.0
    summary = result.summary.set_index("finding")
    assert summary.loc["Infiltrate", ["boxes", "missing_image", "evaluated"]].tolist() == [1, 1, 0]
    assert math.isnan(summary.loc["Infiltrate", "hit_rate"])
    assert summary.loc["all", ["boxes", "missing_image", "evaluated", "hits"]].tolist() == [3, 1, 2, 1]
    assert summary.loc["all", "hit_rate"] == 0.5 and summary.loc["all", "iou@0.5"] == pytest.approx(1018 / 2048)
    grad = localise(model, meta, boxes, paths, thresholds=[0.5], method="gradcam", progress=False)
    assert grad.method == "gradcam" and grad.records["hit"].tolist() == [True, False]
    query_like = CxrModel(QuadrantBackbone(), SquaredMeanHead(), in_chans=1).eval()
    with pytest.raises(ConfigError, match="CAM is not defined for the SquaredMeanHead"):
        localise(query_like, meta, boxes, paths, method="cam", progress=False)
    with pytest.raises(InputError, match="none of the box file's findings"):
        localise(model, meta, _box_frame([("a.png", "Hernia", 0, 0, 1, 1)]), paths, progress=False)


# ---------------------------------------------------------------------- CLI
@pytest.fixture()
def nih_like(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet10t")
    model = build_model(config, len(QUADRANT_CLASSES)).eval()
    export_model(model, tmp_path / "run", ModelCard(model=config, classes=QUADRANT_CLASSES, image_size=48,
                                                    stored_size=64))
    images = tmp_path / "images"
    images.mkdir()
    _thumbnail(images / "00000001_000.png", 1)
    _thumbnail(images / "00000002_000.png", 2)
    rows = ["00000001_000.png,Cardiomegaly,512,0,512,512", "00000002_000.png,Effusion,0,512,400,300",
            "00000002_000.png,Atelectasis,100,600,200,100", "00000009_000.png,Infiltrate,1,2,300,400",
            "00000002_000.png,Nodule,500,500,40,40"]
    (tmp_path / "boxes.csv").write_text(NIH_HEADER + "\n".join(rows) + "\n")
    return tmp_path, model


def test_localise_command_writes_tables_plot_and_overlays(nih_like, capsys):
    root, model = nih_like
    out = root / "loc"
    assert main(["localise", str(root / "run" / "model.json"), str(root / "boxes.csv"), str(root / "images"),
                 "--thresholds", "0.3", "0.6", "--out", str(out), "--overlays", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "Cardiomegaly" in captured.out and "1 image(s) of the box file are not in the image folder" in captured.err
    assert "Nodule (1)" in captured.err
    info = json.loads((out / "localisation.json").read_text())
    assert info["method"] == "cam" and info["thresholds"] == [0.3, 0.6]
    assert info["missing_images"] == ["00000009_000.png"] and info["image_size"] == 48
    summary = pd.read_csv(out / "localisation.csv").set_index("finding")
    assert summary.loc["all", ["boxes", "missing_image", "evaluated"]].tolist() == [4, 1, 3]
    assert {"iou@0.3", "iou@0.6", "hit_rate_low", "hit_rate_high"} <= set(summary.columns)
    boxes = pd.read_csv(out / "boxes.csv")
    pixels = torch.from_numpy(np.array(resize_to(load_image(root / "images" / "00000002_000.png", 64), 48)))
    with torch.no_grad():
        probs = torch.sigmoid(model(pixels[None, None]))[0].numpy()
    effusion = boxes[boxes["finding"] == "Effusion"].iloc[0]
    assert effusion["probability"] == pytest.approx(probs[2], abs=1e-5)
    # 1024 frame -> 128-px file -> 64 stored -> 48 input: x 48 / 1024
    assert effusion[["x0", "y0", "x1", "y1"]].tolist() == pytest.approx([0.0, 24.0, 18.75, 38.0625])
    assert (out / "localisation.png").stat().st_size > 0 and len(list((out / "overlays").glob("*.png"))) == 2


def test_localise_command_without_any_image_is_a_clear_error(nih_like, capsys):
    root, _ = nih_like
    empty = root / "elsewhere"
    empty.mkdir()
    _thumbnail(empty / "unrelated.png")
    assert main(["localise", str(root / "run"), str(root / "boxes.csv"), str(empty), "--out", str(root / "o"),
                 "--no-progress"]) == 2
    assert "none of the 5 boxes has its image" in capsys.readouterr().err and not (root / "o").exists()
    assert main(["localise", str(root / "run"), str(root / "boxes.csv"), str(empty), "--thresholds", "0"]) == 2
    assert "--thresholds must lie in (0, 1]" in capsys.readouterr().err
