"""Localisation of class maps against ground-truth boxes (NIH BBox_List_2017): pointing game and IoU.

Every box is one record (NIH has at most one box per image and finding).
The model's map of the box's class is computed on the image as the model
sees it (decoded, centre-cropped, through its evaluation pipeline), normalised to
[0, 1], and compared with the box mapped into the same frame:

- **Pointing game** (Zhang et al., ECCV 2016): a hit when the map's
  maximum lies inside the box (grown by `tolerance` input pixels on every
  side; 0 by default, the strict form used by CXR saliency benchmarks).
  The point is the centre of the first maximal pixel in raster order. A
  flat map (max = min) points nowhere and counts as a miss ("flat").
- **IoU at a threshold t**: the region {map >= t} (whole pixels) against the
  box (a continuous rectangle): intersection = sum over the region of the
  fraction of each pixel the box covers, union = region area + box area -
  intersection. Exact for any box, so a nodule smaller than one input pixel
  still has an IoU.

Box geometry: NIH boxes are (x, y, w, h) in the 1024 x 1024 frame of the
original images (`box_frame`). A file read from disk may be smaller (the
128-px thumbnails): box coordinates are scaled by the decoded size over the
frame size per axis, shifted by the centre crop and scaled to the stored
size, then followed through the model's evaluation transforms (e.g. a
centre crop, `augment.eval`) to the input size, and clipped to the image.

Per class: boxes in the file, boxes whose image is missing from the image
folder (counted, listed, not evaluated), hits, hit rate with a Wilson 95 %
interval (counts are small: a few dozen boxes per class in a subset), and
mean IoU at each threshold. The "all" row pools every evaluated box.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch

from cxrlt.data.transforms import EvalPipeline
from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import canonical_key

if TYPE_CHECKING:
    from cxrlt.models.card import ModelCard

NIH_BOX_FRAME = 1024
# NIH's BBox file says "Infiltrate" where the label file says "Infiltration".
_BOX_ALIASES = {"infiltrate": "Infiltration"}


def finding_key(name: str) -> str:
    """Canonical key of a finding as spelled in a box file (NIH "Infiltrate" and "Effusion" included)."""
    name = _BOX_ALIASES.get(name.strip().lower(), name)
    return canonical_key(name)


# ----------------------------------------------------------------- reading
def read_boxes(path: str | Path) -> pd.DataFrame:
    """Boxes of a `BBox_List_2017.csv` (or .csv.gz) file: image_id, finding, x, y, w, h, line.

    The NIH header is malformed (it splits "Bbox [x,y,w,h]" into several
    columns and adds empty ones), so rows are read by position: image name,
    finding, x, y, w, h; further empty fields are ignored. A row with a
    missing or non-numeric coordinate or a non-positive size is an
    `InputError` naming the line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("box file not found", path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot decompress the gzip box file ({exc})", path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the box file is not UTF-8 text", path) from None
    rows = []
    for line, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if line == 1 or not any(field.strip() for field in fields):
            continue  # header / blank line
        if len(fields) < 6:
            raise InputError(f"expected 6 fields (image, finding, x, y, w, h), found {len(fields)}", path, line)
        try:
            x, y, w, h = (float(value) for value in fields[2:6])
        except ValueError:
            raise InputError(f"box coordinates must be numbers, found {fields[2:6]}", path, line) from None
        if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
            raise InputError(f"a box needs finite coordinates and a positive width and height, found "
                             f"x={x}, y={y}, w={w}, h={h}", path, line)
        rows.append((fields[0].strip(), fields[1].strip(), x, y, w, h, line))
    if not rows:
        raise InputError("the box file has no boxes (expected: header, then image, finding, x, y, w, h rows)", path)
    return pd.DataFrame(rows, columns=["image_id", "finding", "x", "y", "w", "h", "line"])


# ---------------------------------------------------------------- geometry
def box_to_input(
    box: Sequence[float], decoded_shape: tuple[int, int], pipeline: EvalPipeline, stored: int,
    box_frame: float = NIH_BOX_FRAME,
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in model-input pixels of a box (x, y, w, h) given in the `box_frame` original frame.

    Pixel j covers [j, j + 1). The decoded image (H, W) is taken to be the
    original scaled by W / frame and H / frame; `cxrlt.data.images`
    centre-crops it to a square of side min(H, W) (offsets H // 2 - side // 2,
    W // 2 - side // 2) and resizes that to `stored`; the model's evaluation
    `pipeline` (`augment.eval`, then the resize to the input size) takes it
    from there. The result is clipped to [0, input size].
    """
    x, y, w, h = (float(v) for v in box)
    height, width = decoded_shape
    side = min(height, width)
    top, left = height // 2 - side // 2, width // 2 - side // 2
    scale = stored / side
    sx, sy = width / box_frame, height / box_frame

    def to_input(px: float, py: float) -> tuple[float, float]:
        ix, iy = pipeline.map_point((px * sx - left) * scale, (py * sy - top) * scale, stored, stored)
        return min(max(ix, 0.0), float(pipeline.size)), min(max(iy, 0.0), float(pipeline.size))

    return (*to_input(x, y), *to_input(x + w, y + h))


def box_coverage(box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """Fraction (H, W) of every pixel covered by the box (x0, y0, x1, y1); pixel (i, j) is [j, j+1) x [i, i+1)."""
    x0, y0, x1, y1 = box
    cols = np.arange(shape[1], dtype=np.float64)
    rows = np.arange(shape[0], dtype=np.float64)
    cover_x = np.clip(np.minimum(cols + 1, x1) - np.maximum(cols, x0), 0.0, 1.0)
    cover_y = np.clip(np.minimum(rows + 1, y1) - np.maximum(rows, y0), 0.0, 1.0)
    return np.outer(cover_y, cover_x)


def peak(heat: np.ndarray) -> tuple[float, float] | None:
    """(x, y) centre of the first maximal pixel in raster order, or None for a flat map."""
    if not np.isfinite(heat).all() or heat.max() <= heat.min():
        return None
    i, j = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return j + 0.5, i + 0.5


def pointing_hit(heat: np.ndarray, box: Sequence[float], tolerance: float = 0.0) -> bool:
    """Whether the map's peak lies in the box (x0, y0, x1, y1) grown by `tolerance` pixels (a flat map misses)."""
    point = peak(heat)
    if point is None:
        return False
    x0, y0, x1, y1 = box
    return x0 - tolerance <= point[0] <= x1 + tolerance and y0 - tolerance <= point[1] <= y1 + tolerance


def heat_iou(heat: np.ndarray, box: Sequence[float], threshold: float) -> float:
    """IoU of the pixel region {heat >= threshold} and the continuous box (x0, y0, x1, y1); 0 when both are empty."""
    region = heat >= threshold
    cover = box_coverage(box, heat.shape)
    intersection = float(cover[region].sum())
    union = float(region.sum()) + float(cover.sum()) - intersection
    return intersection / union if union > 0 else 0.0


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (95 % by default) of a proportion; (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding must not move it inside the interval.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


# -------------------------------------------------------------- evaluation
@dataclass
class LocalisationResult:
    """Per-box records, per-class summary and what could not be evaluated.

    `records`: one row per evaluated box (image_id, finding, model class,
    box in input pixels, probability, hit, flat, iou@t...). `summary`: one
    row per finding plus "all". `missing_images`: image names of the box
    file absent from the image folder. `unknown_findings`: finding -> box
    count for findings the model has no class for.
    """

    records: pd.DataFrame
    summary: pd.DataFrame
    thresholds: list[float]
    method: str
    tolerance: float
    missing_images: list[str] = field(default_factory=list)
    unknown_findings: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form: settings, per-class summary, missing images, unknown findings."""
        return {
            "method": self.method,
            "thresholds": self.thresholds,
            "tolerance": self.tolerance,
            "classes": self.summary.to_dict(orient="records"),
            "missing_images": self.missing_images,
            "unknown_findings": self.unknown_findings,
        }


def iou_column(threshold: float) -> str:
    """Name of the IoU column at `threshold` in records and summary."""
    return f"iou@{threshold:g}"


def summarise(records: pd.DataFrame, boxes: pd.DataFrame, thresholds: Sequence[float]) -> pd.DataFrame:
    """Per-finding table: boxes, missing_image, evaluated, hits, hit_rate (+ Wilson 95 %), flat, mean IoU per threshold.

    `boxes` are all boxes of known findings (with a `finding` column and a
    boolean `missing` column); `records` the evaluated ones.
    """
    rows = []
    findings = list(dict.fromkeys(boxes["finding"]))
    for finding in findings + ["all"]:
        every = boxes if finding == "all" else boxes[boxes["finding"] == finding]
        done = records if finding == "all" else records[records["finding"] == finding]
        n, hits = len(done), int(done["hit"].sum()) if len(done) else 0
        low, high = wilson_interval(hits, n)
        row = {"finding": finding, "boxes": len(every), "missing_image": int(every["missing"].sum()),
               "evaluated": n, "hits": hits, "hit_rate": hits / n if n else math.nan,
               "hit_rate_low": low, "hit_rate_high": high, "flat_maps": int(done["flat"].sum()) if n else 0}
        for t in thresholds:
            row[iou_column(t)] = float(done[iou_column(t)].mean()) if n else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def localise(
    model: torch.nn.Module,
    card: "ModelCard",
    boxes: pd.DataFrame,
    image_paths: dict[str, Path],
    thresholds: Sequence[float] = (0.5,),
    method: str = "auto",
    tolerance: float = 0.0,
    box_frame: float = NIH_BOX_FRAME,
    batch_size: int = 16,
    progress: bool = True,
) -> LocalisationResult:
    """Pointing game and IoU of the model's class maps against `boxes` (from `read_boxes`).

    `image_paths` maps an image name (the box file's first column) to its
    file; boxes whose image is not there are counted as missing. Findings
    are matched to the model's classes by canonical name; findings the
    model lacks are reported in `unknown_findings`. Raises `InputError`
    when no finding matches a model class.
    """
    from cxrlt.data.images import crop_and_resize, decode_image
    from cxrlt.explain.cam import METHODS, compute_maps, supports_cam
    from cxrlt.progress import progress_bar

    if method not in METHODS:
        raise ConfigError(f"unknown map method {method!r}; choose one of: {', '.join(METHODS)}")
    if method == "cam" and not supports_cam(model):  # fail before any image is read
        raise ConfigError(f"CAM is not defined for the {type(model.head).__name__} (its classifier is not linear in "
                          "the feature map); use method 'gradcam' or 'auto'")
    thresholds = [float(t) for t in thresholds]
    classes = list(card.classes)
    class_of = {canonical_key(name): k for k, name in enumerate(classes)}
    keys = boxes["finding"].map(finding_key)
    known = keys.isin(class_of)
    unknown = boxes.loc[~known, "finding"].value_counts().to_dict()
    if not known.any():
        raise InputError(
            f"none of the box file's findings ({', '.join(sorted(set(boxes['finding'])))}) is a class of the model "
            f"({', '.join(classes)})"
        )
    boxes = boxes[known].assign(class_index=keys[known].map(class_of).astype(int))
    boxes = boxes.assign(missing=~boxes["image_id"].isin(image_paths))
    missing = sorted(set(boxes.loc[boxes["missing"], "image_id"]))
    present = boxes[~boxes["missing"]]

    stored = card.stored_size
    pipeline = card.eval_pipeline()
    names = list(dict.fromkeys(present["image_id"]))
    records = []
    resolved_method = method
    for start in progress_bar(range(0, len(names), batch_size), enabled=progress, desc="localise", leave=False):
        chunk = names[start:start + batch_size]
        pixels, shapes = [], []
        for name in chunk:
            decoded = decode_image(image_paths[name])
            shapes.append(decoded.shape[:2])
            pixels.append(pipeline(crop_and_resize(decoded, stored)))
        wanted = present[present["image_id"].isin(chunk)]
        needed = sorted(set(wanted["class_index"]))
        maps = compute_maps(model, torch.from_numpy(np.stack(pixels))[:, None], needed, method=method)
        resolved_method = maps.method
        column = {k: i for i, k in enumerate(needed)}
        for _, box in wanted.iterrows():
            b = chunk.index(box["image_id"])
            heat = maps.maps[b, column[box["class_index"]]].numpy()
            x0, y0, x1, y1 = box_to_input((box["x"], box["y"], box["w"], box["h"]), shapes[b], pipeline, stored,
                                          box_frame)
            record = {"image_id": box["image_id"], "finding": box["finding"],
                      "model_class": classes[box["class_index"]], "line": int(box["line"]),
                      "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                      "probability": float(maps.probabilities[b, box["class_index"]]),
                      "hit": pointing_hit(heat, (x0, y0, x1, y1), tolerance), "flat": peak(heat) is None}
            for t in thresholds:
                record[iou_column(t)] = heat_iou(heat, (x0, y0, x1, y1), t)
            records.append(record)
    columns = ["image_id", "finding", "model_class", "line", "x0", "y0", "x1", "y1", "probability", "hit", "flat",
               *map(iou_column, thresholds)]
    frame = pd.DataFrame(records, columns=columns)
    if resolved_method == "auto":  # nothing was evaluated: name the method that would have been used
        resolved_method = "cam" if supports_cam(model) else "gradcam"
    return LocalisationResult(frame, summarise(frame, boxes, thresholds), thresholds, resolved_method, tolerance,
                              missing, {str(k): int(v) for k, v in unknown.items()})


def index_images(folders: Sequence[str | Path]) -> dict[str, Path]:
    """Image name (file name, as the box file lists it) -> file, for every image under `folders`.

    Raises `InputError` when two different files share a name (the box
    file could not tell which one it means).
    """
    from cxrlt.inference.predict import find_images

    index: dict[str, Path] = {}
    for _, path in find_images(folders):
        other = index.setdefault(path.name, path)
        if other != path:
            raise InputError(f"two images share the name {path.name!r} ({other} and {path}); the box file names "
                             "images by file name, so each name must be unique in the image folders")
    return index


def plot_summary(result: LocalisationResult, path: str | Path, title: str = "") -> Path:
    """Bar plot per finding: pointing-game hit rate (Wilson 95 % bars) and mean IoU per threshold, with counts."""
    from matplotlib.figure import Figure

    from cxrlt.io import save_figure

    table = result.summary
    series = [("hit rate", table["hit_rate"].to_numpy(float))]
    series += [(f"IoU @ {t:g}", table[iou_column(t)].to_numpy(float)) for t in result.thresholds]
    x = np.arange(len(table))
    width = 0.8 / len(series)
    figure = Figure(figsize=(max(6.0, 1.1 * len(table) + 2), 4.2), layout="constrained")
    axis = figure.subplots()
    for i, (label, values) in enumerate(series):
        offset = x - 0.4 + width * (i + 0.5)
        shown = np.nan_to_num(values)
        if i == 0:
            low = np.nan_to_num(table["hit_rate_low"].to_numpy(float), nan=0.0)
            high = np.nan_to_num(table["hit_rate_high"].to_numpy(float), nan=0.0)
            errors = np.clip(np.vstack([shown - low, high - shown]), 0.0, None)
            errors[:, table["evaluated"].to_numpy() == 0] = np.nan  # no interval where nothing was evaluated
            axis.bar(offset, shown, width, label=label, yerr=errors, capsize=2)
        else:
            axis.bar(offset, shown, width, label=label)
    axis.set_xticks(x, [f"{f}\nn={n}" for f, n in zip(table["finding"], table["evaluated"])], fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("hit rate / mean IoU")
    axis.legend(fontsize=8, ncols=len(series))
    method = {"cam": "CAM", "gradcam": "Grad-CAM"}.get(result.method, result.method)
    axis.set_title(title or f"Localisation ({method}): pointing game and IoU per finding", fontsize=10)
    return save_figure(path, figure)
