"""`cxrlt demo`: the whole job on the bundled synthetic dataset, on a CPU."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from cxrlt.config import RunConfig

DATA = "data"
HELP = "generate the synthetic long-tailed chest X-rays, train a small CNN, evaluate it (a few CPU minutes)"
DESCRIPTION = """
Generates 5,000 synthetic frontal chest films whose 14 NIH findings follow the
real NIH label frequencies and co-occurrence (with a real tail), decodes them
once into a prepared cache (what `cxrlt prepare` does), trains a small CNN
from scratch on CPU, and evaluates it on the held-out test part. It
prints the per-class table with head / medium / tail means and writes
metrics.json, predictions.csv, plots/ and report.md into the output folder.
Running it again on the same folder reuses what is there (a stopped demo
continues where it stopped). Settings: src/cxrlt/resources/demo.yaml;
override any with key.sub=value.
"""
EXAMPLE = """
cxrlt demo --out runs/demo
cxrlt demo --out runs/demo-focal loss.name=focal train.epochs=5
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt demo`."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def run(args: argparse.Namespace) -> int:
    """Generate, train (or resume), evaluate, print."""
    import time
    from importlib import resources
    from pathlib import Path

    from cxrlt.config import apply_overrides, parse_config, parse_yaml
    from cxrlt.training import quiet_lightning
    from cxrlt.runs.folder import RunFolder
    from cxrlt.runs.train import resume, train

    started = time.monotonic()
    out = Path(args.out)
    progress = not args.no_progress
    quiet_lightning()
    folder = RunFolder(out)
    if folder.started:
        if args.overrides:
            print(f"{out} already holds a demo run; overrides are ignored (use another --out to change settings)")
        result = resume(out, progress=progress)
    else:
        raw = parse_yaml(resources.files("cxrlt.resources").joinpath("demo.yaml").read_text(), "demo.yaml")
        raw["data"]["sources"][0]["out"] = str(out / DATA)
        config = parse_config(apply_overrides(raw, args.overrides), origin="demo config")
        folder.claim(DATA)  # the generated films and their cache live in the run folder
        if config.data.images.cache is None:
            config.data.images.cache = _prepare(config, out / DATA / "cache", progress)
        result = train(config, out, progress=progress)
    if result.metrics is None:
        return 0  # a non-zero rank of a multi-process run: rank 0 evaluates and prints
    print(result.metrics.table)
    minutes = (time.monotonic() - started) / 60
    print(f"\ndemo finished in {minutes:.1f} min; results in {result.run_dir}: metrics.json, predictions.csv, "
          "report.md, plots/")
    return 0


def _prepare(config: RunConfig, cache: Path, progress: bool) -> Path:
    """Generate the synthetic images and decode them once into a prepared cache (the fast data path)."""
    from cxrlt.data.cache import prepare_cache
    from cxrlt.data.images import default_workers
    from cxrlt.data.sources import load_table

    table = load_table(config.data)
    prepare_cache(table, cache, config.data.images.stored, workers=default_workers(), progress=progress)
    return cache
