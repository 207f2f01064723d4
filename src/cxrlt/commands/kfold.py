"""`cxrlt kfold`: one model per patient-grouped fold, out-of-fold and fold-averaged test predictions."""

from __future__ import annotations

import argparse

HELP = "train one model per patient-grouped stratified fold; out-of-fold and fold-averaged test predictions"
DESCRIPTION = """
Keeps the test split of CONFIG and cuts the other images into --folds
patient-grouped, iteratively stratified folds (no patient in two folds).
Model k trains on the other folds and validates on fold k; it is a normal
run in OUT/folds/k/. Then:
  OUT/predictions_oof.csv, labels_oof.csv, metrics_oof.json
      every non-test image predicted by the model that did not see it
  OUT/predictions.csv, labels.csv, metrics.json
      test predictions, the fold models merged (--merge)
Both metrics files have a run's metrics.json schema: thresholds for F1 (and,
with evaluation.temperature, a temperature) are tuned on the out-of-fold
predictions; calibration; bootstrap intervals with evaluation.bootstrap
resamples. A stopped k-fold
run continues with --resume: finished folds are skipped, a stopped fold
resumes from its last checkpoint. The OUT folder can be a member of
`cxrlt ensemble` (its out-of-fold predictions serve as validation).
"""
EXAMPLE = """
cxrlt kfold configs/aggregate/efficientnet_b3_5fold.yaml --folds 5 --out runs/b3-5fold
cxrlt kfold --resume runs/demo-5fold
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt kfold`."""
    parser.add_argument("config", nargs="?", help="run configuration (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=5")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default: 5)")
    parser.add_argument("--merge", choices=("arithmetic", "geometric"), default="arithmetic",
                        help="how the fold models' test probabilities are merged: arithmetic mean (default) or "
                        "geometric (sigmoid of the mean logit)")
    parser.add_argument("--out", help="k-fold folder (default: runs/NAME-kfold, NAME from the config)")
    parser.add_argument("--resume", metavar="DIR", help="continue the k-fold run in DIR where it stopped")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def run(args: argparse.Namespace) -> int:
    """Train or resume every fold, merge, print the per-fold and merged scores."""
    from pathlib import Path

    from cxrlt.training import quiet_lightning
    from cxrlt.config import load_config
    from cxrlt.runs.kfold import kfold, resume_kfold
    from cxrlt.errors import ConfigError

    progress = not args.no_progress
    quiet_lightning()
    if args.resume:
        if args.config or args.overrides:
            raise ConfigError("--resume takes the configuration saved in the k-fold folder; give no CONFIG or overrides")
        result = resume_kfold(args.resume, progress=progress)
    else:
        if not args.config:
            raise ConfigError("give a CONFIG file, or --resume DIR")
        config = load_config(args.config, args.overrides)
        out = Path(args.out or Path("runs") / f"{config.name}-kfold")
        result = kfold(config, out, args.folds, args.merge, progress=progress)
    if result is None:
        return 0  # a non-zero rank of a multi-process run: rank 0 combines and prints
    print(result.table)
    print(f"\nk-fold folder: {result.run_dir}  (predictions_oof.csv, metrics_oof.json, predictions.csv, metrics.json, "
          "folds/)")
    return 0
