"""`cxrlt submission`: a prediction table as a CXR-LT challenge submission CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a CXR-LT submission CSV from a prediction table (official class order)"
DESCRIPTION = """
Reads a prediction table (an id column and one probability column per class,
as `cxrlt predict` writes it) and writes the CSV the CXR-LT challenge scores:
one row per image, the id column (`dicom_id` unless --id-name), then one
column per class of the protocol, spelled and ordered as the challenge
lists them. Class names are matched in any spelling cxrlt knows
("Effusion" / "Pleural Effusion"); a class missing from the table, or one
outside the protocol, is an error naming it. Protocols: cxr-lt-2023 (26
classes), cxr-lt-2024-task1 (40), cxr-lt-2024-zero-shot (5); the tables are
in docs/evaluation.md.
"""
EXAMPLE = """
cxrlt submission --predictions runs/mimic/predictions_test.csv --protocol cxr-lt-2023 --out submission.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt submission`."""
    from cxrlt.evaluation.protocols import PROTOCOLS

    parser.add_argument("--predictions", required=True, type=Path, metavar="P.csv", help="prediction table")
    parser.add_argument("--protocol", required=True, choices=tuple(PROTOCOLS), help="the challenge task")
    parser.add_argument("--out", required=True, type=Path, metavar="S.csv", help="where to write the submission")
    parser.add_argument("--id-column", metavar="C", help="id column of the prediction table (default: found by name)")
    parser.add_argument("--id-name", default="dicom_id", metavar="NAME",
                        help="name of the id column in the submission (default: dicom_id)")


def run(args: argparse.Namespace) -> int:
    """Write the submission and say what it holds."""
    from cxrlt.evaluation.predictions import read_predictions
    from cxrlt.evaluation.protocols import get_protocol, write_submission
    from cxrlt.io import check_output

    check_output(args.out, "--out", inputs=[args.predictions])
    protocol = get_protocol(args.protocol)
    table = read_predictions(args.predictions, args.id_column)
    write_submission(args.out, table, protocol, args.id_name)
    print(f"wrote {args.out}: {len(table)} images x {len(protocol.classes)} classes of {protocol.title}")
    return 0
