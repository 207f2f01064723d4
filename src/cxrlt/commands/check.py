"""`cxrlt check`: validate a data set's labels and decode every image once, listing all bad files."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "check a run's data: validate the label table and decode every image, listing every bad file at once"
DESCRIPTION = """
Reads the label table from CONFIG's `data` section (the same checks as
training: columns, label values, duplicate ids, splits), then decodes every
image it names (PNG, JPEG, DICOM...) in parallel and prints every file that
cannot be read, grouped by reason and counted. A bad label table stops the
check with its own message (exit 2) before any image is read.

--out writes the list of bad images (image_id, path, reason) as JSON or CSV
(chosen by the suffix); it is written even when every image is readable.
To train anyway, set `data.images.skip_bad: true`: runs then leave the bad
images out (with a warning listing them), and `cxrlt prepare` records them as
bad in the cache.

Exit status: 0 when every image is readable, 1 when some are not, 2 when the
configuration or the label table is wrong.
"""
EXAMPLE = """
cxrlt check configs/nih128-quickstart.yaml --out nih_bad_images.csv
"""

EXIT_BAD_IMAGES = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt check`."""
    parser.add_argument("config", type=Path, metavar="CONFIG", help="run configuration (YAML); its data section is used")
    parser.add_argument("--override", metavar="KEY=VALUE", action="append", default=[],
                        help="change a config value first, e.g. data.sources.0.labels=other.csv (repeatable)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the bad images to FILE (.json or .csv)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="decoding processes (default: all available cores; 0 or 1: no extra processes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the table, scan the images, print the bad ones by reason, write --out."""
    from cxrlt.config import load_data_config
    from cxrlt.data.images import scan_images
    from cxrlt.data.sources import load_table
    from cxrlt.errors import ConfigError
    from cxrlt.io import check_output

    suffix = args.out.suffix.lower() if args.out is not None else None
    if suffix not in (None, ".json", ".csv"):
        raise ConfigError(f"--out {args.out}: the suffix must be .json or .csv (it chooses the format)")
    if args.out is not None:
        check_output(args.out, "--out", inputs=[args.config])
    data = load_data_config(args.config, args.override, "`cxrlt check` reads its labels and images from it")
    table = load_table(data)
    paths = table.image_paths()
    print(f"label table: {len(table)} images, {table.n_classes} classes ({_splits(table)})")
    bad = scan_images(paths, workers=args.workers, progress=not args.no_progress)
    ids = dict(zip((str(p) for p in paths), table.image_ids))
    rows = [{"image_id": ids[str(path)], "path": str(path), "reason": reason} for path, reason in bad]
    if args.out is not None:
        _write(args.out, rows, args.config, len(table))
    if not rows:
        print(f"all {len(table)} images are readable")
    else:
        print(_report(rows, len(table)))
    if args.out is not None:
        print(f"wrote {args.out}")
    return EXIT_BAD_IMAGES if rows else 0


def _splits(table) -> str:  # table: cxrlt.data.table.LabelTable
    counts = table.meta["split"].value_counts(dropna=False)
    parts = [f"{int(counts[name])} {name}" for name in ("train", "val", "test") if name in counts]
    unassigned = int(table.meta["split"].isna().sum())
    if unassigned:
        parts.append(f"{unassigned} without split")
    return ", ".join(parts)


def _report(rows: list[dict[str, str]], total: int) -> str:
    """Every bad file, grouped by reason, largest group first."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row["reason"], []).append(row["path"])
    lines = [f"{len(rows)} of {total} images cannot be read ({len(groups)} distinct reason{'s' if len(groups) != 1 else ''}):"]
    for reason, paths in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"\n{len(paths)} file{'s' if len(paths) != 1 else ''}: {reason}")
        lines.extend(f"  {path}" for path in paths)
    lines.append("\nfix or remove these files, or set data.images.skip_bad: true to leave them out of training")
    return "\n".join(lines)


def _write(out: Path, rows: list[dict[str, str]], config: Path, total: int) -> None:
    import pandas as pd

    from cxrlt.io import write_dataframe_csv, write_json

    if out.suffix.lower() == ".json":
        write_json(out, {"config": str(config), "images": total, "bad": rows})
    else:
        write_dataframe_csv(out, pd.DataFrame(rows, columns=["image_id", "path", "reason"]))
