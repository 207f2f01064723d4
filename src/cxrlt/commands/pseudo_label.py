"""`cxrlt pseudo-label`: a teacher run's probabilities for the classes each source of a merged dataset lacks."""

from __future__ import annotations

import argparse

HELP = "write a teacher's probabilities for the classes each data source does not annotate (pseudo-labels)"
DESCRIPTION = """
Reads the data section of CONFIG (several sources merged into one label
space), finds the classes each source does not annotate, and predicts them
with the saved model of TEACHER_RUN for every image of such a source outside
the test split. Writes one CSV row per image: image_id, source (position in
data.sources), source_name, teacher, then the probability of each class the
image's source lacks (empty where it annotates it). Train on it with
data.pseudo_labels: {table: TABLE} (mode soft, or hard with a threshold;
optionally only some sources and classes).
"""
EXAMPLE = """
cxrlt pseudo-label runs/teacher configs/bag_of_tricks/resnet50_merged.yaml --out pseudo.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """TEACHER_RUN, CONFIG, --out and options."""
    parser.add_argument("teacher", metavar="TEACHER_RUN", help="run or export folder of the teacher's saved model")
    parser.add_argument("config", metavar="CONFIG", help="run config whose data section is read")
    parser.add_argument("--out", metavar="TABLE.csv", required=True, help="where to write the pseudo-label table")
    parser.add_argument("--override", metavar="KEY=VALUE", action="append", default=[],
                        help="change a config value first, e.g. data.sources.0.labels=/data/x.csv (repeatable)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Write the table and say how many labels it fills per source and class."""
    from cxrlt.config import load_data_config
    from cxrlt.data.pseudo_labels import PROVENANCE
    from cxrlt.io import check_output
    from cxrlt.runs.pseudo_labels import write_pseudo_labels

    check_output(args.out, "--out", inputs=[args.config])
    data = load_data_config(args.config, args.override, "`cxrlt pseudo-label` reads its sources from it")
    frame = write_pseudo_labels(args.teacher, data, args.out, batch_size=args.batch_size,
                                progress=not args.no_progress)
    classes = [column for column in frame.columns if column not in PROVENANCE]
    for source, rows in frame.groupby("source"):
        filled = [f"{name} ({rows[name].notna().sum()})" for name in classes if rows[name].notna().any()]
        print(f"data.sources.{source} ({rows['source_name'].iloc[0]}): {len(rows)} images, "
              f"teacher probabilities for {', '.join(filled)}")
    print(f"wrote {args.out}")
    return 0
