"""`cxrlt report`: (re)build a run's self-contained HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a run's report.html: one self-contained page with its metrics, curves and plots"
DESCRIPTION = """
Builds the HTML report of a finished (or re-evaluated) run folder from the
files already in it: summary cards (data, model, loss, training, mean AUC /
mAP with confidence intervals), a per-class table coloured by head / medium /
tail group, the training label distribution, ROC and precision-recall
curves, calibration, training curves, example class activation maps
(plots/cams/*.png) and the configuration. Every figure is embedded in the
file and it loads nothing from anywhere: it can be mailed or archived on its
own. Sections whose inputs are missing say so. Every run writes this report
when it finishes; run this command after `cxrlt evaluate RUN_DIR` or after
adding plots to refresh it.
"""
EXAMPLE = """
cxrlt report runs/demo
cxrlt report runs/demo --out reports/demo.html
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt report`."""
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder made by `cxrlt train`")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="where to write the page (default: RUN_DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it went."""
    from cxrlt.evaluation.html import write_html_report
    from cxrlt.io import check_output

    if args.out is not None:
        check_output(args.out, "--out")
    path = write_html_report(args.run_dir, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
