"""Time loading one model input (decode + centre crop + resize) vs reading it from a prepared cache.

Uses the real 1024 x 1024 NIH PNGs in ../shared/data/nih/images when present,
else generated 1024 x 1024 PNGs. Files are read once before timing, so both
paths are measured with the operating system's file cache warm. Prints
ms/image and images/s for originals and cache, their ratio, and where the
time of an original goes (decode, resize; OpenCV's equivalents when it is
importable).

    python benchmarks/bench_loading.py [--size 224] [--repeats 3] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
NIH_IMAGES = REPO.parent / "shared" / "data" / "nih" / "images"


def benchmark_images(limit: int | None = None, workdir: Path | None = None) -> tuple[list[Path], str]:
    """The NIH PNGs (or generated stand-ins written under `workdir`) and a description."""
    paths = sorted(NIH_IMAGES.glob("*.png")) if NIH_IMAGES.is_dir() else []
    if paths:
        paths = paths[:limit] if limit else paths
        return paths, f"{len(paths)} real NIH PNGs (1024 x 1024) from {NIH_IMAGES}"
    from PIL import Image

    workdir = Path(workdir or tempfile.mkdtemp(prefix="cxrlt-bench-"))
    rng = np.random.default_rng(0)
    count = limit or 100
    paths = []
    for i in range(count):
        # Smooth anatomy-like field plus sensor noise: compresses like a radiograph.
        coarse = Image.fromarray(rng.integers(30, 220, (16, 16), dtype=np.uint8))
        field = np.asarray(coarse.resize((1024, 1024), Image.BICUBIC), dtype=np.float64)
        pixels = np.clip(field + rng.normal(0, 3, field.shape), 0, 255).astype(np.uint8)
        path = workdir / f"gen{i:04d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths, f"{count} generated 1024 x 1024 PNGs (NIH images not found at {NIH_IMAGES})"


def table_for(paths: Sequence[Path], copies: int = 1):
    """A LabelTable over `paths` (each listed `copies` times under distinct ids)."""
    import pandas as pd

    from cxrlt.data.table import LabelTable

    rows = [(f"{p.stem}#{k}", str(p)) for k in range(copies) for p in paths]
    meta = pd.DataFrame(rows, columns=["image_id", "path"])
    return LabelTable(meta, np.zeros((len(rows), 1), np.float32), ("Finding",), None)


def per_item_seconds(function: Callable, items: Sequence, repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Best of `repeats` passes over `items`, in seconds per item of `clock`.

    `time.process_time` (this process's CPU time) is the steadier figure on a
    machine shared with other work; wall time is what a user waits.
    """
    function(items[0])
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for item in items:
            function(item)
        best = min(best, (clock() - start) / len(items))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images")
    args = parser.parse_args()

    from cxrlt.data.cache import prepare_cache
    from cxrlt.data.images import crop_and_resize, decode_image, load_image
    from cxrlt.data.store import open_store

    with tempfile.TemporaryDirectory(prefix="cxrlt-bench-") as tmp:
        paths, description = benchmark_images(args.limit, Path(tmp))
        for path in paths:
            path.read_bytes()  # warm the OS file cache for both contenders
        print(f"images: {description}; target {args.size} x {args.size}; best of {args.repeats} passes")

        table = table_for(paths)
        cache = prepare_cache(table, Path(tmp) / "cache", args.size, workers=1, progress=False)
        store = open_store(table, args.size, cache)
        rows = list(range(len(store)))
        print(f"{'source':<28}{'wall ms/image':>14}{'images/s':>10}{'CPU ms/image':>14}")
        figures = {}
        for name, function, items in (
            ("original (load_image)", lambda p: load_image(p, args.size), paths),
            ("prepared cache (CacheStore)", lambda i: store[i], rows),
        ):
            wall = per_item_seconds(function, items, args.repeats)
            cpu = per_item_seconds(function, items, args.repeats, time.process_time)
            figures[name] = wall
            print(f"{name:<28}{wall * 1e3:>14.3f}{1 / wall:>10.1f}{cpu * 1e3:>14.3f}")
        original, cached = figures.values()
        print(f"cache is {original / cached:.0f}x faster (wall)")

        decoded = [decode_image(p) for p in paths[: min(len(paths), 40)]]

        def cpu_ms(function: Callable, items: Sequence) -> float:
            return per_item_seconds(function, items, args.repeats, time.process_time) * 1e3

        ours = cpu_ms(lambda p: load_image(p, args.size), paths)
        print("\nwhere the time of an original goes (CPU ms/image, steadier than wall time on a shared machine):")
        print(f"  decode (Pillow)                  {cpu_ms(decode_image, paths):8.3f}")
        print(f"  crop + exact area resize (ours)  {cpu_ms(lambda a: crop_and_resize(a, args.size), decoded):8.3f}")
        print(f"  load_image (both)                {ours:8.3f}")
        try:
            import cv2
        except ImportError:
            print("  OpenCV: not installed (opencv-python-headless), not compared")
            return
        cv2.setNumThreads(1)
        size = (args.size, args.size)
        label = f"decode (OpenCV {cv2.__version__})"
        print(f"  {label:<33}{cpu_ms(lambda p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), paths):8.3f}")
        print(f"  INTER_AREA resize (OpenCV)       "
              f"{cpu_ms(lambda a: cv2.resize(a, size, interpolation=cv2.INTER_AREA), decoded):8.3f}")
        both = cpu_ms(
            lambda p: cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), size, interpolation=cv2.INTER_AREA), paths
        )
        print(f"  OpenCV decode + resize           {both:8.3f}   (OpenCV is {ours / both:.2f}x as fast as ours)")
        differences = [
            np.abs(crop_and_resize(a, args.size).astype(int) - cv2.resize(a, size, interpolation=cv2.INTER_AREA)).max()
            for a in decoded
        ]
        print(f"  ours vs OpenCV INTER_AREA: largest difference {max(differences)} gray level(s)")


if __name__ == "__main__":
    main()
