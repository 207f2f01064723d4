"""`cxrlt prepare`: decode a run's images once into a memory-mapped cache."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "decode every image of a run's data once into a fixed-size cache (fast training input)"
DESCRIPTION = """
Reads the label table from CONFIG's `data` section, decodes every image
(PNG, JPEG, DICOM...), centre-crops it to a square and resizes it to N x N
pixels (--size; exact area averaging), and stores all of them in one memory-mapped
uint8 array under --out. Point a run at it with `data.images.cache: DIR`.

The work is resumable: if the command is interrupted (Ctrl-C, a kill, a
full disk), running it again decodes only the images not yet done. --out
must be a new or empty folder or a cache folder; a folder holding anything
else is refused before a file is touched. A cache of another image list or
size is refused unless --overwrite, which removes only the files cxrlt wrote
there. One `prepare` writes a folder at a time. The pixel file's disk space
is reserved up front, so a full disk stops the command before decoding.
Images that cannot be decoded stop the command with the list of all of them
(the others are kept); --skip-bad records them as bad instead, to be left
out of training.
"""
EXAMPLE = "cxrlt prepare configs/nih128-quickstart.yaml --out cache/nih128-64 --workers 8"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt prepare`."""
    parser.add_argument("config", type=Path, metavar="CONFIG", help="run configuration (YAML); its data section is used")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="cache folder to create or resume")
    parser.add_argument(
        "--size", type=_positive_int, default=None, metavar="N",
        help="side of the stored square images in pixels (default: data.images.store_size, else data.images.size)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="decoding processes (default: all available cores; 0 or 1: no extra processes)",
    )
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="record undecodable images as bad and go on (default: data.images.skip_bad, else stop and list them)",
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild a cache prepared for other images or another size (only cxrlt's files go)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _finished_before(out: Path, size: int, fingerprint: str) -> int:
    """Images an earlier, interrupted `prepare` of the same table and size already decoded into `out`."""
    from cxrlt.data.cache import read_cache_info
    from cxrlt.errors import InputError

    try:
        before = read_cache_info(out)
    except InputError:
        return 0  # a new folder, or one prepare_cache will refuse or rebuild
    return before.finished if (before.size, before.fingerprint) == (size, fingerprint) else 0


def run(args: argparse.Namespace) -> int:
    """Prepare (or finish) the cache and print its throughput."""
    import time

    from cxrlt.config import load_data_config
    from cxrlt.data.cache import prepare_cache, read_cache_info
    from cxrlt.data.images import default_workers
    from cxrlt.data.sources import load_table
    from cxrlt.io import format_size

    data = load_data_config(args.config, purpose="`cxrlt prepare` reads its images from it")
    table = load_table(data)
    size = args.size or data.images.stored
    workers = default_workers() if args.workers is None else max(0, args.workers)
    skip_bad = bool(args.skip_bad or data.images.skip_bad)

    already = 0 if args.overwrite else _finished_before(args.out, size, table.fingerprint())
    start = time.perf_counter()
    prepare_cache(table, args.out, size, workers=workers, progress=not args.quiet, skip_bad=skip_bad, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    info = read_cache_info(args.out)
    processed = info.finished - already
    where = f"{args.out} ({_count(info.count, 'image')} at {size} x {size}, {format_size(info.count * size * size)})"
    if processed == 0:
        print(f"up to date: {where}")
    else:
        rate = processed / seconds if seconds > 0 else float("inf")
        resumed = f"; {already} were done by an earlier run" if already else ""
        print(
            f"decoded {_count(processed, 'image')} in {seconds:.1f} s ({rate:.1f} images/s, "
            f"{_count(max(workers, 1), 'worker')}){resumed} -> {where}"
        )
    if info.bad:
        verb = "is" if len(info.bad) == 1 else "are"
        print(
            f"{_count(len(info.bad), 'image')} could not be decoded and {verb} recorded as bad "
            f"(listed in {args.out / 'bad.json'}); runs leave {'it' if len(info.bad) == 1 else 'them'} out"
        )
    print(f"use it with `data.images.cache: {args.out}` (size {size})")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
