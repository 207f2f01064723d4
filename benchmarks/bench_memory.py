"""Memory of DataLoader workers reading a prepared cache: one copy of the pixels, however many workers.

A `CacheStore` memory-maps the cache's pixel file read-only, so its pages
live once in the operating system's page cache and every process that reads
them maps those same pages; nothing is copied per worker. This script checks
it: for 0, 1, 2 and 4 DataLoader workers over an `ImageDataset` on a fresh
`CacheStore`, each worker first reads every image of the cache (the worst
case, what many epochs converge to), then the loader runs one epoch. With
the workers still alive it prints, per process:

- USS / PSS of the whole process (private memory; proportional share of
  shared memory), from psutil when installed, else /proc/<pid>/smaps_rollup;
- RSS / PSS / copied bytes of the cache mapping alone, from /proc/<pid>/smaps
  ("copied": its Anonymous pages, i.e. pixels duplicated into the process).

One copy means: each worker's cache RSS is the whole cache (it read it all),
none of it is copied, and the PSS of the cache summed over the processes is
the cache size once, not once per worker. (smaps counts page-cache pages
that only one process maps as Private_Clean, so with a single reader the
cache shows up in that process's USS although nothing was copied.) Linux
only (/proc).

    python benchmarks/bench_memory.py [--size 224] [--copies 8] [--workers 0 1 2 4]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MIB = 1024 * 1024


@dataclass
class ProcessMemory:
    """Bytes of one process: whole-process USS / PSS and the cache mapping's RSS / PSS / copied pages."""

    pid: int
    role: str
    uss: int
    pss: int
    cache_rss: int
    cache_pss: int
    cache_copied: int


def _smaps_fields(lines: Sequence[str]) -> dict[str, int]:
    """'Name:   123 kB' lines -> {Name: bytes}."""
    fields = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[key] = int(parts[0]) * 1024
    return fields


def cache_mapping(pid: int, path: Path) -> dict[str, int]:
    """Summed smaps fields (bytes) of every mapping of `path` in process `pid` (zeros when unmapped)."""
    target = str(Path(path).resolve())
    total: dict[str, int] = {}
    current: list[str] | None = None
    blocks: list[list[str]] = []
    with open(f"/proc/{pid}/smaps") as handle:
        for line in handle:
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:  # a mapping's header line
                current = [] if len(head) == 6 and head[5].strip() == target else None
                if current is not None:
                    blocks.append(current)
            elif current is not None:
                current.append(line)
    for block in blocks:
        for key, value in _smaps_fields(block).items():
            total[key] = total.get(key, 0) + value
    return total


def process_totals(pid: int) -> tuple[int, int]:
    """(USS, PSS) of process `pid` in bytes: psutil when installed, else /proc/<pid>/smaps_rollup."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            fields = _smaps_fields(handle.readlines())
        return fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0), fields.get("Pss", 0)
    info = psutil.Process(pid).memory_full_info()
    return info.uss, info.pss


def memory_of(pid: int, role: str, pixels: Path) -> ProcessMemory:
    """USS / PSS of `pid` and its share of the cache file `pixels`."""
    uss, pss = process_totals(pid)
    mapped = cache_mapping(pid, pixels)
    return ProcessMemory(pid, role, uss, pss, mapped.get("Rss", 0), mapped.get("Pss", 0),
                         mapped.get("Anonymous", 0))


class _PidDataset:
    """An ImageDataset's items plus the id of the process that produced them."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, labels, row = self.dataset[index]
        return image, labels, row, os.getpid()


def _read_whole_cache(_worker_id: int) -> None:
    """DataLoader worker_init_fn: read every image once (each worker maps the whole cache)."""
    from torch.utils.data import get_worker_info

    store = get_worker_info().dataset.dataset.store
    for row in range(len(store)):
        store[row]


def measure_workers(cache: Path, image_ids: Sequence[str], size: int, workers: int,
                    batch_size: int = 32) -> list[ProcessMemory]:
    """Per-process memory after `workers` DataLoader workers (0: this process) read the whole cache.

    Opens a fresh `CacheStore`, so no earlier mapping is inherited; the
    workers are measured while alive (persistent), then shut down.
    """
    import warnings

    import numpy as np
    from torch.utils.data import DataLoader

    from cxrlt.data.cache import PIXELS
    from cxrlt.data.dataset import ImageDataset
    from cxrlt.data.store import CacheStore
    from cxrlt.data.transforms import build_pipeline

    store = CacheStore(cache, image_ids, size)
    pixels = store.cache_dir / PIXELS
    dataset = _PidDataset(ImageDataset(store, np.zeros((len(store), 1), np.float32), build_pipeline([], size)))
    if workers == 0:
        for row in range(len(store)):
            dataset[row]
        result = [memory_of(os.getpid(), "main (reads)", pixels)]
    else:
        # More workers than cores is the point of the comparison, not a mistake.
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                            persistent_workers=True, worker_init_fn=_read_whole_cache)
        pids: set[int] = set()
        for batch in loader:
            pids.update(int(p) for p in batch[3])
        result = [memory_of(os.getpid(), "main", pixels)]
        result += [memory_of(pid, f"worker {k}", pixels) for k, pid in enumerate(sorted(pids))]
        del loader, batch  # shuts the workers down
    del dataset, store
    gc.collect()  # unmaps this process's view before the next configuration
    return result


def format_rows(rows: Sequence[ProcessMemory], cache_bytes: int) -> str:
    """One line per process, MiB."""
    lines = []
    for r in rows:
        lines.append(f"  {r.role:<14}{r.pid:>8}{r.uss / MIB:>10.1f}{r.pss / MIB:>10.1f}"
                     f"{r.cache_rss / MIB:>12.1f}{r.cache_pss / MIB:>12.1f}{r.cache_copied / MIB:>14.2f}")
    shared = sum(r.cache_pss for r in rows)
    lines.append(f"  cache PSS summed over processes: {shared / MIB:.1f} MiB = {shared / cache_bytes:.2f} x the cache "
                 "(1.00 = one copy)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare a cache, then measure 0 / 1 / 2 / 4 workers (or --workers)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--copies", type=int, default=8, help="list every image this many times (a bigger cache)")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many distinct images")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    args = parser.parse_args(argv)
    if not Path("/proc/self/smaps").is_file():
        raise SystemExit("bench_memory needs Linux /proc/<pid>/smaps")

    from bench_loading import benchmark_images, table_for

    from cxrlt.data.cache import PIXELS, prepare_cache
    from cxrlt.data.images import default_workers

    with tempfile.TemporaryDirectory(prefix="cxrlt-bench-") as tmp:
        paths, description = benchmark_images(args.limit, Path(tmp))
        table = table_for(paths, args.copies)
        cache = prepare_cache(table, Path(tmp) / "cache", args.size, workers=default_workers(), progress=False)
        cache_bytes = (Path(cache) / PIXELS).stat().st_size
        try:
            import psutil

            totals = f"psutil {psutil.__version__}"
        except ImportError:
            totals = "/proc/<pid>/smaps_rollup (psutil not installed)"
        print(f"images: {description}, each listed {args.copies}x = {len(table)} images at {args.size} px; "
              f"cache pixel file {cache_bytes / MIB:.1f} MiB; USS/PSS from {totals}, cache columns from "
              "/proc/<pid>/smaps")
        for workers in args.workers:
            rows = measure_workers(cache, table.image_ids, args.size, workers)
            print(f"\n{workers} worker(s):")
            print(f"  {'process':<14}{'pid':>8}{'USS MiB':>10}{'PSS MiB':>10}{'cache RSS':>12}{'cache PSS':>12}"
                  f"{'cache copied':>14}")
            print(format_rows(rows, cache_bytes))


if __name__ == "__main__":
    main()
