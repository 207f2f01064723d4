"""Loader workers over a prepared cache share one copy of the pixels (benchmarks/bench_memory.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"
pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="needs Linux /proc/<pid>/smaps")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A prepared cache of 160 random 128-px images (2.5 MiB of pixels)."""
    from PIL import Image

    from cxrlt.data.cache import PIXELS, prepare_cache
    from cxrlt.data.table import LabelTable

    folder = tmp_path_factory.mktemp("memory")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(160):
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(paths[-1])
    meta = pd.DataFrame({"image_id": [p.stem for p in paths], "path": [str(p) for p in paths]})
    table = LabelTable(meta, np.zeros((len(paths), 1), np.float32), ("Finding",), None)
    out = prepare_cache(table, folder / "cache", 128, workers=1, progress=False)
    return Path(out), table.image_ids, (Path(out) / PIXELS).stat().st_size


def test_two_workers_share_one_copy(bench, cache):
    folder, ids, size = cache
    rows = bench.measure_workers(folder, ids, 128, workers=2)
    main, workers = rows[0], rows[1:]
    assert len(workers) == 2 and main.cache_rss == 0  # the main process never read pixels
    page = 4096
    for worker in workers:
        assert worker.cache_rss >= size - page  # each worker read the whole cache...
        assert worker.cache_copied == 0  # ...copied none of it...
        assert worker.cache_pss <= size / 2 + page  # ...and is charged half: PSS well below the cache size
    assert sum(w.cache_pss for w in workers) == pytest.approx(size, abs=2 * page)


def test_single_reader_is_charged_the_whole_cache(bench, cache):
    folder, ids, size = cache
    (main,) = bench.measure_workers(folder, ids, 128, workers=0)
    assert main.cache_rss == pytest.approx(size, abs=4096) and main.cache_pss == pytest.approx(size, abs=4096)
    assert main.cache_copied == 0


def test_smaps_fields_parse_kilobytes(bench):
    fields = bench._smaps_fields(["Rss:                 12 kB\n", "Pss:  3 kB\n", "VmFlags: rd mr\n"])
    assert fields == {"Rss": 12 * 1024, "Pss": 3 * 1024}
