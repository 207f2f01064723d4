"""`cxrlt train`: train (or resume) a run from a YAML configuration."""

from __future__ import annotations

import argparse

SMOKE_DATA = "smoke-data"
HELP = "train a classifier from a run configuration (or resume a stopped run)"
DESCRIPTION = """
Reads CONFIG (YAML; see configs/ for the seed-paper recipes), applies
key.sub=value overrides, and trains every stage, checkpointing each epoch.
At the end it saves the model (safetensors), predictions, metrics.json and
report.md in the run folder. A stopped run (killed, Ctrl-C, crashed machine)
continues from its last finished epoch with --resume.
"""
EXAMPLE = """
cxrlt train configs/nih128-quickstart.yaml --out runs/nih128 train.epochs=3 model.backbone=resnet18
cxrlt train --resume runs/demo
cxrlt train configs/thesis/full.yaml --smoke --out runs/thesis-smoke
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt train`."""
    parser.add_argument("config", nargs="?", help="run configuration (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.epochs=5 loss.name=focal stages.1.epochs=2")
    parser.add_argument("--out", help="run folder (default: runs/NAME, NAME from the config)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped (overrides "
                        "may change only where and how it computes: data.images.skip_bad, data.images.cache, "
                        "train.num_workers, train.accelerator, train.devices, train.strategy, train.num_nodes, "
                        "evaluation.report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.add_argument("--smoke", action="store_true",
                        help="check that CONFIG runs end to end in a minute on a CPU: same loss, head, sampler, stages "
                             "and augmentation on ~200 synthetic 32-px images, a small backbone of the same family, "
                             "one short epoch per stage (see cxrlt.recipes); no real data needed")


def run(args: argparse.Namespace) -> int:
    """Train or resume, then print where the results are."""
    from pathlib import Path

    from cxrlt.config import load_config
    from cxrlt.errors import ConfigError
    from cxrlt.training import quiet_lightning
    from cxrlt.runs.train import resume, train

    progress = not args.no_progress
    quiet_lightning()
    if args.resume:
        if args.config or args.smoke:
            raise ConfigError("--resume takes the configuration saved in the run folder; give no CONFIG or --smoke "
                              "(safe KEY=VALUE overrides such as data.images.skip_bad=true are accepted)")
        result = resume(args.resume, progress=progress, overrides=args.overrides)
    else:
        if not args.config:
            raise ConfigError("give a CONFIG file to train, or --resume RUN_DIR")
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.out or Path("runs") / config.name)
        if args.smoke:
            from cxrlt.config import apply_overrides, load_yaml, parse_config
            from cxrlt.recipes import smoke_config
            from cxrlt.runs.folder import RunFolder

            if not args.out:
                run_dir = Path("runs") / f"{config.name}-smoke"
            folder = RunFolder(run_dir)
            folder.refuse_if_started()
            folder.claim(SMOKE_DATA)  # the smoke images live in the run folder, so it is ours before they are made
            raw = smoke_config(apply_overrides(load_yaml(args.config), args.overrides), run_dir / SMOKE_DATA)
            config = parse_config(raw, origin=f"{args.config} (smoke)")
        result = train(config, run_dir, progress=progress)
    if result.metrics is None:
        return 0  # a non-zero rank of a multi-process run: rank 0 evaluates and prints
    print(result.metrics.table)
    if args.smoke:
        print("\nsmoke run: synthetic images, small backbone, one short epoch per stage; the numbers mean nothing")
    print(f"\nrun folder: {result.run_dir}  (metrics.json, predictions.csv, report.md, plots/, model.safetensors)")
    return 0
