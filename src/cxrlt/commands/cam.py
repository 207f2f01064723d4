"""`cxrlt cam`: class activation maps (CAM / Grad-CAM) of a saved model as overlay PNGs."""

from __future__ import annotations

import argparse

HELP = "class activation maps (CAM / Grad-CAM) per class, as heat-map overlays on the images (PNG)"
DESCRIPTION = """
CHECKPOINT is a run folder (or its model.safetensors / model.json). Every
image (PNG, JPEG or DICOM; folders are searched recursively) is read exactly
as for prediction, and for each chosen class one PNG is written to --out:
the input next to the map blended over it, titled with the class probability
and the method. An index of the files, maps.csv, is written next to them.

Classes: --classes names them in any spelling ("Effusion", "pleural_effusion"
and "Pleural Effusion" are one class); by default each image gets its --top-k
most probable classes.

Methods: CAM (the classifier applied at every position of the last feature
map) for heads with a linear classifier (linear, gcn, experts without MHA);
Grad-CAM (gradient-weighted feature map, ReLU) for every head, including the
query decoder and experts with MHA. --method auto picks CAM where it exists.
Each map is rescaled to [0, 1] by its own minimum and maximum, so colours show
where a class is driven within one image, not how strongly across images.
"""
EXAMPLE = """
cxrlt cam runs/nih scans/00001336_000.png --classes Effusion Cardiomegaly --out cams/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt cam`."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="run folder, or its model.safetensors / model.json")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files and/or folders (searched recursively)")
    parser.add_argument("--classes", nargs="+", metavar="CLASS", help="class names (any spelling; default: each "
                        "image's --top-k most probable classes)")
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="classes per image when --classes is not "
                        "given (default: 3)")
    parser.add_argument("--method", choices=("auto", "cam", "gradcam"), default="auto",
                        help="auto (default): CAM where the head has a linear classifier, else Grad-CAM")
    parser.add_argument("--out", default="cams", metavar="DIR", help="output folder (default: cams)")
    parser.add_argument("--alpha", type=float, default=0.6, help="opacity of the map where it is 1 (default: 0.6)")
    parser.add_argument("--colormap", default="jet", help="matplotlib colour map (default: jet)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Load the model and images, compute the maps, write the overlays and their index."""
    from pathlib import Path

    import pandas as pd

    from cxrlt.data.images import error_reason, format_bad_images
    from cxrlt.errors import ConfigError, InputError
    from cxrlt.explain.cam import class_indices
    from cxrlt.explain.overlay import model_input, write_overlays
    from cxrlt.io import check_output, write_dataframe_csv
    from cxrlt.inference.saved_model import load_model
    from cxrlt.inference.predict import default_device, find_images

    check_output(args.out, "--out", folder=True)
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    import matplotlib

    if args.colormap not in matplotlib.colormaps:
        raise ConfigError(f"--colormap: matplotlib has no colour map {args.colormap!r} (e.g. jet, inferno, turbo)")

    checkpoint = Path(args.checkpoint)
    if checkpoint.suffix == ".json":
        checkpoint = checkpoint.parent
    model, card = load_model(checkpoint)
    classes = None if not args.classes else class_indices(args.classes, list(card.classes))
    found = find_images(args.images)
    loaded, bad = [], []
    for image_id, path in found:
        try:
            loaded.append((image_id, model_input(path, card)))
        except InputError as exc:
            bad.append((path, error_reason(exc)))
    if bad:
        raise InputError("cannot read these images (nothing was written):\n" + format_bad_images(bad))
    model = model.to(default_device())
    records = write_overlays(model, card, loaded, args.out, classes, top_k=min(args.top_k, len(card.classes)),
                             method=args.method, colormap=args.colormap, alpha=args.alpha,
                             batch_size=args.batch_size, progress=not args.no_progress)
    index = pd.DataFrame([{"image_id": r.image_id, "class": r.class_name, "probability": r.probability,
                           "method": r.method, "file": r.path.name} for r in records])
    write_dataframe_csv(Path(args.out) / "maps.csv", index)
    method = {r.method for r in records}
    print(f"wrote {len(records)} overlay(s) for {len(loaded)} image(s) ({', '.join(sorted(method))}) to {args.out}")
    return 0
