"""`cxrlt prepare` throughput with 1, 2, ... N worker processes (N = available cores).

Each run prepares a fresh cache of the same images (the NIH PNGs listed
`--copies` times, or generated stand-ins) and is timed end to end, worker
start-up included. Scaling efficiency = images/s with w workers divided by
w x the one-worker rate; it needs otherwise idle cores to mean anything. CPU
ms/image (main process + workers) shows the parallel overhead regardless.

    python benchmarks/bench_prepare.py [--size 224] [--copies 2] [--max-workers N]
"""

from __future__ import annotations

import argparse
import resource
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
    from cxrlt.data.images import default_workers, load_image

    cores = default_workers()
    top = args.max_workers or cores
    with tempfile.TemporaryDirectory(prefix="cxrlt-bench-") as tmp:
        paths, description = benchmark_images(args.limit, Path(tmp))
        for path in paths:
            path.read_bytes()
        load_image(paths[0], args.size)  # imports (Pillow plugins, scipy) outside the timed runs
        table = table_for(paths, args.copies)
        print(f"images: {description}, each listed {args.copies}x = {len(table)} per run; "
              f"size {args.size}; {cores} cores available")
        print(f"{'workers':>8}{'seconds':>10}{'images/s':>11}{'speed-up':>10}{'efficiency':>12}{'CPU ms/image':>14}")
        one = None
        for workers in range(1, top + 1):
            cpu_start = _cpu_seconds()
            start = time.perf_counter()
            prepare_cache(table, Path(tmp) / f"cache-{workers}", args.size, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            cpu = (_cpu_seconds() - cpu_start) / len(table)
            rate = len(table) / seconds
            one = one or rate
            print(f"{workers:>8}{seconds:>10.2f}{rate:>11.1f}{rate / one:>10.2f}{rate / (workers * one):>12.0%}"
                  f"{cpu * 1e3:>14.2f}")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes (all the work, any contention aside)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
