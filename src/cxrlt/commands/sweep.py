"""`cxrlt sweep`: variants of one configuration over seeds, as ordinary runs, summarised with paired intervals."""

from __future__ import annotations

import argparse

HELP = "train variants of one configuration over several seeds and compare them (mean ± sd, paired intervals)"
DESCRIPTION = """
Runs every combination of the --grid values, and every --variant, once per
seed, each as an ordinary run in OUT/runs/VARIANT/seedN (the command
`cxrlt train OUT/base.yaml OVERRIDES train.seed=N ...` in a process of its
own; the data split stays as BASE has it, so every run is evaluated on the
same images). Finished runs are skipped and stopped ones resume, so the
same command (or --resume OUT) continues a sweep stopped at any point, and
a run that fails is recorded with its error while the others go on. A
variant whose first stage would train exactly as another variant's (a cRT
stage after a plain run) reuses that finished stage.

Then writes OUT/results.csv (one row per run: status, time, every metric
overall and per group), OUT/summary.md and summary.json (per variant mean ±
sd over seeds of AUC, mAP and F1, overall and head / medium / tail, and the
paired patient bootstrap interval of each variant's difference to
--baseline on the seed-averaged predictions) and OUT/summary.png.

--folds K scores every run out of fold: each run is `cxrlt kfold ...
--folds K` on the base's images (K patient-grouped folds, the same for
every run), and the summary reads its out-of-fold predictions, one per
image by the model that did not train on it. For data too small for a
separate test set to hold enough positives of the rare classes.

--jobs N runs N at a time, each on GPU number k mod the visible GPUs, with
the CPU threads (OMP_NUM_THREADS, else the cores) split evenly.
--print-commands prints one `cxrlt train` (or `cxrlt kfold`) command per
pending run for a cluster's own scheduler (a Slurm job array, GNU
parallel); --collect then summarises what they wrote. Commands and run
configurations read paths relative to the folder the sweep was started from.
"""
EXAMPLE = """
cxrlt sweep configs/nih128-quickstart.yaml --grid=loss.name=bce,focal,asl --seeds 0,1,2 --out runs/losses
cxrlt sweep run.yaml --variant bce: --variant cal:loss.name=class_aware --variant bce+crt:'stages=[{name: main}, {name: crt, freeze_backbone: true, epochs: 2}]' --seeds 0,1,2 --out runs/ltmethods --jobs 2
cxrlt sweep configs/benchmark/longtail-nih-oof.yaml --folds 3 --variant bce: --variant cal:loss.name=class_aware --seeds 0,1,2 --out runs/oof
cxrlt sweep --resume runs/losses --print-commands
cxrlt sweep --resume runs/losses --collect
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt sweep`."""
    parser.add_argument("config", nargs="?", metavar="BASE.yaml", help="the base run configuration (YAML)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="values of one setting; the variants are every combination of the grids (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=V,KEY=V",
                        help="a named variant with its overrides; `NAME:` alone is the base as it is (repeatable)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (train.seed), default 0,1,2")
    parser.add_argument("--baseline", metavar="NAME", help="the variant the others are compared with (default: the "
                        "first)")
    parser.add_argument("--out", help="sweep folder (default: runs/NAME-sweep, NAME from the config)")
    parser.add_argument("--resume", metavar="DIR", help="continue (or, with --collect / --print-commands, use) the "
                        "sweep in DIR with its saved configuration, variants and seeds")
    parser.add_argument("--folds", type=int, metavar="K", help="score each run out of fold: train it as `cxrlt "
                        "kfold --folds K` and summarise its out-of-fold predictions (default: one ordinary run)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at a time (default: 1)")
    parser.add_argument("--print-commands", action="store_true",
                        help="print one `cxrlt train` (`cxrlt kfold` with --folds) command per pending run "
                        "instead of running them")
    parser.add_argument("--collect", action="store_true", help="train nothing: summarise the finished runs (the others are "
                        "listed as pending, running, interrupted or failed)")
    parser.add_argument("--resamples", type=int, default=1000, metavar="N",
                        help="paired bootstrap resamples (default: 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def run(args: argparse.Namespace) -> int:
    """Open (or start) the sweep, then print commands, or train and summarise."""
    from pathlib import Path

    from cxrlt.config import load_yaml
    from cxrlt.errors import ConfigError
    from cxrlt.runs.sweep import Sweep, SweepSpec, grid_variants, named_variant, parse_seeds, pending_commands, \
        run_sweep

    if args.print_commands and args.collect:
        raise ConfigError("--print-commands and --collect do different things; give one of them")
    if args.resume:
        if args.config or args.grid or args.variant or args.folds:
            raise ConfigError("--resume takes the base configuration, variants, seeds and folds saved in the sweep "
                              "folder; give no BASE.yaml, --grid, --variant or --folds")
        sweep = Sweep.open(args.resume)
        if args.baseline:
            sweep.spec = SweepSpec.build(sweep.spec.variants, sweep.spec.seeds, args.baseline, sweep.spec.folds)
    else:
        if not args.config:
            raise ConfigError("give a BASE.yaml configuration and its variants, or --resume DIR")
        variants = grid_variants(args.grid) + [named_variant(text) for text in args.variant]
        spec = SweepSpec.build(variants, parse_seeds(args.seeds), args.baseline, args.folds)
        out = Path(args.out or Path("runs") / f"{load_yaml(args.config).get('name') or 'run'}-sweep")
        sweep = Sweep.open(out, args.config, spec)
    if args.print_commands:
        for line in pending_commands(sweep):
            print(line)
        return 0
    summary = run_sweep(sweep, args.jobs, progress=not args.no_progress, train=not args.collect,
                        resamples=args.resamples)
    files = sweep.folder
    print(files.summary_md.read_text(encoding="utf-8"))
    print(f"sweep folder: {files.path}  ({files.results.name}, {files.summary_md.name}, {files.summary_json.name}, "
          f"{files.plot.name}, runs/)")
    failed = [f"{name} seed {seed}" for name, entry in summary["variants"].items()
              for seed, state in entry["not_finished"].items() if state["status"] == "failed"]
    return 1 if failed else 0
