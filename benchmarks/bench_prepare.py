"""`cxrlt prepare` throughput with 1, 2, ... N worker processes (N = available cores).

Each run prepares a fresh cache of the same images (the NIH PNGs listed
`--copies` times, or generated stand-ins) and is timed end to end, worker
start-up included. Scaling efficiency = images/s with w workers divided by
w x the one-worker rate.

    python benchmarks/bench_prepare.py [--size 224] [--copies 2] [--max-workers N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_loading import benchmark_images, table_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--copies", type=int, default=2, help="list every image this many times (more work per run)")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many distinct images")
    parser.add_argument("--max-workers", type=int, default=None, help="default: available cores")
    args = parser.parse_args()

    from cxrlt.data.cache import prepare_cache
    from cxrlt.data.images import default_workers

    cores = default_workers()
    top = args.max_workers or cores
    with tempfile.TemporaryDirectory(prefix="cxrlt-bench-") as tmp:
        paths, description = benchmark_images(args.limit, Path(tmp))
        for path in paths:
            path.read_bytes()
        table = table_for(paths, args.copies)
        print(f"images: {description}, each listed {args.copies}x = {len(table)} per run; "
              f"size {args.size}; {cores} cores available")
        print(f"{'workers':>8}{'seconds':>10}{'images/s':>11}{'speed-up':>10}{'efficiency':>12}")
        one = None
        for workers in range(1, top + 1):
            start = time.perf_counter()
            prepare_cache(table, Path(tmp) / f"cache-{workers}", args.size, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            rate = len(table) / seconds
            one = one or rate
            print(f"{workers:>8}{seconds:>10.2f}{rate:>11.1f}{rate / one:>10.2f}{rate / (workers * one):>12.0%}")


if __name__ == "__main__":
    main()
