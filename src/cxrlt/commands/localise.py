"""`cxrlt localise`: how well a model's class maps point at ground-truth boxes (NIH BBox_List_2017)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "localisation of class maps against NIH boxes: pointing-game hit rate and IoU per finding"
DESCRIPTION = """
CHECKPOINT is a run folder (or its model.safetensors / model.json); BOXES is
NIH's BBox_List_2017.csv (or .csv.gz): image name, finding, x, y, w, h in the
1024 x 1024 frame of the original images. IMAGES are folders (or files)
holding the images by their NIH file name; boxes whose image is not there
are counted per finding and listed, not evaluated (a subset such as the
128-px thumbnails covers only some boxes).

For every box the map of its finding (CAM or Grad-CAM, see `cxrlt cam`,
rescaled to [0, 1]) is computed on the image as the model reads it, and the
box is mapped into the same frame (scaled from --box-frame to the size of the
file actually read, centre-cropped, resized, then through the model's
evaluation transforms, e.g. its augment.eval centre crop). Per finding:

  hit rate   pointing game: the map's maximum lies inside the box (grown by
             --tolerance input pixels), with a Wilson 95 % interval;
  iou@t      mean IoU of the region {map >= t} with the box, for each
             --thresholds value.

NIH "Effusion" and "Infiltrate" match the model classes Pleural Effusion /
Effusion and Infiltration; findings the model lacks are reported and skipped.

Writes to --out: localisation.json (settings, per-finding table, missing
images), localisation.csv (per finding, plus "all"), boxes.csv (every
evaluated box), localisation.png (bar plot), and with --overlays N the
overlays of the first N evaluated boxes with the box drawn.
"""
EXAMPLE = """
cxrlt localise runs/nih ../shared/data/nih/BBox_List_2017.csv.gz ../shared/data/nih/images128 --out loc/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt localise`."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="run folder, or its model.safetensors / model.json")
    parser.add_argument("boxes", metavar="BOXES", help="BBox_List_2017.csv (or .csv.gz)")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="folders (or files) with the images, "
                        "found by file name")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.5], metavar="T",
                        help="map thresholds in (0, 1] for IoU (default: 0.5)")
    parser.add_argument("--method", choices=("auto", "cam", "gradcam"), default="auto",
                        help="auto (default): CAM where the head has a linear classifier, else Grad-CAM")
    parser.add_argument("--tolerance", type=float, default=0.0, metavar="PX",
                        help="pointing-game tolerance in model-input pixels (default: 0, strict)")
    parser.add_argument("--box-frame", type=float, default=1024.0, metavar="PX",
                        help="side of the frame the box coordinates are given in (NIH: 1024)")
    parser.add_argument("--out", default="localisation", metavar="DIR", help="output folder (default: localisation)")
    parser.add_argument("--overlays", type=int, default=0, metavar="N", help="also write overlays with the box "
                        "for the first N evaluated boxes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Read boxes and model, evaluate every box whose image is present, write JSON, CSVs and the plot."""
    import math
    import sys

    import numpy as np

    from cxrlt.errors import ConfigError, InputError
    from cxrlt.explain import localisation as loc
    from cxrlt.io import check_output, write_dataframe_csv, write_json
    from cxrlt.inference.saved_model import load_model
    from cxrlt.inference.predict import default_device

    check_output(args.out, "--out", folder=True)
    bad = [t for t in args.thresholds if not 0.0 < t <= 1.0]
    if bad:
        raise ConfigError(f"--thresholds must lie in (0, 1] (maps are scaled to [0, 1]), got {bad}")
    if args.tolerance < 0 or args.box_frame <= 0 or args.batch_size < 1 or args.overlays < 0:
        raise ConfigError("--tolerance and --overlays must be >= 0, --box-frame and --batch-size positive")
    boxes = loc.read_boxes(args.boxes)
    checkpoint = Path(args.checkpoint)
    model, card = load_model(checkpoint)
    model = model.to(default_device())
    index = loc.index_images(args.images)
    result = loc.localise(model, card, boxes, index, args.thresholds, args.method, args.tolerance, args.box_frame,
                          args.batch_size, progress=not args.no_progress)
    if result.records.empty:
        raise InputError(
            f"none of the {len(boxes)} boxes has its image in {', '.join(args.images)} (looked up by file name, "
            f"e.g. {boxes['image_id'].iloc[0]!r}); nothing was written"
        )
    out = Path(args.out)
    info = {"checkpoint": str(args.checkpoint), "boxes_file": str(args.boxes), "box_frame": args.box_frame,
            "image_size": card.image_size, **result.to_dict()}
    write_json(out / "localisation.json", info)
    write_dataframe_csv(out / "localisation.csv", result.summary)
    write_dataframe_csv(out / "boxes.csv", result.records)
    loc.plot_summary(result, out / "localisation.png")
    if args.overlays:
        _write_box_overlays(model, card, result, index, out / "overlays", args.overlays)

    table = result.summary
    columns = ["hit_rate", *map(loc.iou_column, result.thresholds)]
    print(f"{'finding':<20} {'boxes':>5} {'missing':>7} {'n':>4} " + " ".join(f"{c:>9}" for c in columns))
    for _, row in table.iterrows():
        cells = " ".join("      n/a" if math.isnan(row[c]) else f"{row[c]:9.3f}" for c in columns)
        print(f"{row['finding']:<20} {row['boxes']:>5} {row['missing_image']:>7} {row['evaluated']:>4} {cells}")
    method = {"cam": "CAM", "gradcam": "Grad-CAM"}[result.method]
    print(f"method {method}; hit = map maximum inside the box (tolerance {args.tolerance:g} px); "
          f"iou@t = IoU of map >= t with the box")
    if result.missing_images:
        print(f"{len(result.missing_images)} image(s) of the box file are not in the image folder(s) "
              f"({int(np.sum(table['missing_image'].iloc[:-1]))} boxes); listed in localisation.json", file=sys.stderr)
    if result.unknown_findings:
        skipped = ", ".join(f"{k} ({v})" for k, v in result.unknown_findings.items())
        print(f"findings the model has no class for, skipped: {skipped}", file=sys.stderr)
    print(f"wrote localisation.json, localisation.csv, boxes.csv, localisation.png to {out}")
    return 0


def _write_box_overlays(model, card, result, index, folder: Path, limit: int) -> None:
    """Overlays of the first `limit` evaluated boxes, with the box outlined and the first IoU threshold contoured."""
    import numpy as np
    import torch

    from cxrlt.data.images import crop_and_resize, decode_image
    from cxrlt.explain.cam import METHOD_NAMES, compute_maps
    from cxrlt.explain.overlay import save_overlay
    from cxrlt.io import safe_name

    stored = card.stored_size
    pipeline = card.eval_pipeline()
    classes = list(card.classes)
    for _, box in result.records.head(limit).iterrows():
        image = pipeline(crop_and_resize(decode_image(index[box["image_id"]]), stored))
        k = classes.index(box["model_class"])
        maps = compute_maps(model, torch.from_numpy(np.array(image))[None, None], [k], method=result.method)
        t = result.thresholds[0]
        title = (f"{box['image_id']}: {box['finding']}  p = {box['probability']:.3f}  ({METHOD_NAMES[maps.method]})  "
                 f"hit = {'yes' if box['hit'] else 'no'}  IoU@{t:g} = {box[f'iou@{t:g}']:.2f}")
        name = f"{safe_name(Path(box['image_id']).stem)}_{safe_name(box['finding'])}.png"
        save_overlay(folder / name, image, maps.maps[0, 0].numpy(), title,
                     boxes=[(box["x0"], box["y0"], box["x1"], box["y1"])], threshold=t)

