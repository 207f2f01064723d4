"""`cxrlt predict`: probabilities for image files with a saved model."""

from __future__ import annotations

import argparse

HELP = "predict findings for image files or folders (PNG, JPEG, DICOM) with a trained model"
DESCRIPTION = """
MODEL is a run folder (or its model.safetensors), an exported model.onnx
(run by onnxruntime; same columns) or a pushed model hf-hub:OWNER/NAME
(fetched through the Hugging Face cache; HF_HUB_OFFLINE=1 uses the cached
copy only). Every image is decoded at
the run's stored size, passed through its evaluation transforms (config
augment.eval, saved in model.json) and resized to the model input, exactly
as the run's validation and test images were, and scored. The full
per-class probabilities go to --out (CSV: image_id + one column per class);
the terminal shows, per image, the findings whose probability reaches the
class threshold tuned on validation (--threshold overrides it).
--classes scores only the named classes, in that order; with a query-decoder
head (label-text embeddings) a name the model was never trained on is scored
zero-shot.

Test-time augmentation (--tta) scores several views of each image and merges
them per class: hflip (image + mirror), multicrop (centre + 4 corner crops of
87.5% of the evaluated view's side), multiscale (zoom 0.9 / 1.0 / 1.1); several families
combine as a product (hflip,multicrop = ten-crop). --tta-merge arithmetic
averages probabilities; geometric takes the sigmoid of the mean logit (the
renormalised geometric mean). By default the TTA the run was evaluated with
(config augment.tta, whose probabilities the thresholds were tuned on) is
used; --tta none switches it off.

--studies-out also writes one row per study: the predictions of a study's
images merged per class (--study-merge max, mean, or logit_mean: the sigmoid
of the mean logit). Study ids come from --studies (a CSV keyed by image id
with a study_id / StudyInstanceUID column, or --study-column), else from the
DICOM files' StudyInstanceUID; images without one are left out of that
table and counted.
"""
EXAMPLE = """
cxrlt predict runs/demo scans/ patient7.dcm --out predictions.csv
cxrlt predict exports/demo/model.onnx scans/ --out predictions_onnx.csv
cxrlt predict runs/demo scans/ --tta hflip,multicrop --tta-merge geometric --out predictions_tta.csv
cxrlt predict runs/query-decoder scans/ --classes "Pleural Effusion" Pneumomediastinum --out pm.csv
cxrlt predict runs/demo dicoms/ --out images.csv --studies-out studies.csv --study-merge mean
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt predict`."""
    parser.add_argument("model", metavar="MODEL", help="run folder, model.safetensors, model.onnx or hf-hub:OWNER/NAME")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    parser.add_argument("--threshold", type=float, help="one decision threshold for all classes "
                        "(default: the per-class thresholds tuned on validation)")
    parser.add_argument("--classes", nargs="+", metavar="NAME",
                        help="score only these classes, in this order (untrained names: zero-shot, query head only)")
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable files instead of stopping")
    parser.add_argument("--tta", metavar="VIEWS", help="test-time augmentation: comma-separated hflip, multicrop, "
                        "multiscale, or none (default: as the run was evaluated)")
    parser.add_argument("--tta-merge", choices=("arithmetic", "geometric"),
                        help="how views are merged (default: as the run was evaluated, else arithmetic)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--show", type=int, default=20, metavar="N", help="images listed on screen (default: 20)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    studies = parser.add_argument_group("per-study table")
    studies.add_argument("--studies-out", metavar="S.csv", help="also write one row per study (study_id + classes)")
    studies.add_argument("--studies", metavar="TABLE", help="CSV of image id -> study id (default: DICOM "
                         "StudyInstanceUID)")
    studies.add_argument("--study-column", metavar="COL", help="study id column of --studies (default: found by name)")
    studies.add_argument("--study-merge", choices=("max", "mean", "logit_mean"), default="max",
                         help="how a study's image predictions merge (default: max)")


def run(args: argparse.Namespace) -> int:
    """Find, check, decode and score the images; write the CSV; print a summary."""
    import sys

    from cxrlt.data.images import format_bad_images
    from cxrlt.evaluation.predictions import write_predictions
    from cxrlt.inference.predict import Predictor, readable_images
    from cxrlt.io import check_output

    check_output(args.out, "--out", inputs=[args.model, *args.paths])
    if args.studies_out is not None:
        check_output(args.studies_out, "--studies-out", inputs=[args.model, *args.paths, args.out, args.studies])
    elif args.studies is not None or args.study_column is not None:
        from cxrlt.errors import ConfigError

        raise ConfigError("--studies and --study-column choose the study ids of --studies-out: give --studies-out too")
    predictor = Predictor.load(args.model, args.classes, args.tta, args.tta_merge, args.threshold)
    images, bad = readable_images(args.paths, args.skip_bad, progress=not args.no_progress)
    if bad:
        print(f"skipping {len(bad)} unreadable file(s):\n{format_bad_images(bad)}", file=sys.stderr)
    probs = predictor.predict([path for _, path in images], args.batch_size, progress=not args.no_progress)
    ids = [image_id for image_id, _ in images]
    write_predictions(args.out, ids, predictor.classes, probs)
    for image_id, found in zip(ids, predictor.findings(probs[: args.show])):
        print(f"{image_id}: {found}")
    if len(ids) > args.show:
        print(f"... {len(ids) - args.show} more")
    views = f" (TTA {'+'.join(predictor.tta)}, {predictor.tta_merge} merge)" if predictor.tta else ""
    print(f"wrote {len(ids)} rows x {len(predictor.classes)} classes to {args.out}{views}")
    if args.studies_out is not None:
        _write_studies(args, images, probs, predictor.classes)
    return 0


def _write_studies(args: argparse.Namespace, images: list, probs, classes) -> None:
    """The per-study table of `--studies-out`."""
    from cxrlt.data.images import dicom_study_uid
    from cxrlt.evaluation.predictions import write_predictions
    from cxrlt.evaluation.studies import aggregate_studies, read_study_ids

    ids = [image_id for image_id, _ in images]
    if args.studies is not None:
        study_ids = read_study_ids(args.studies, ids, args.study_column)
    else:
        study_ids = [dicom_study_uid(path) for _, path in images]
    studies = aggregate_studies(study_ids, probs, method=args.study_merge)
    write_predictions(args.studies_out, studies.ids, classes, studies.probs, id_column="study_id")
    print(f"wrote {len(studies.ids)} studies ({args.study_merge} of {studies.n_images - studies.excluded_images} "
          f"images) to {args.studies_out}; {studies.excluded_images} image(s) without a study id left out")
