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


def per_item_seconds(function: Callable, items: Sequence, repeats: int) -> float:
    """Best of `repeats` passes over `items`, in seconds per item."""
    function(items[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, (time.perf_counter() - start) / len(items))
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

        original = per_item_seconds(lambda p: load_image(p, args.size), paths, args.repeats)
        table = table_for(paths)
        cache = prepare_cache(table, Path(tmp) / "cache", args.size, workers=1, progress=False)
        store = open_store(table, args.size, cache)
        cached = per_item_seconds(lambda i: store[i], list(range(len(store))), args.repeats)

        print(f"{'source':<28}{'ms/image':>10}{'images/s':>12}")
        print(f"{'original (load_image)':<28}{original * 1e3:>10.3f}{1 / original:>12.1f}")
        print(f"{'prepared cache (CacheStore)':<28}{cached * 1e3:>10.3f}{1 / cached:>12.1f}")
        print(f"cache is {original / cached:.0f}x faster")

        decoded = [decode_image(p) for p in paths[: min(len(paths), 40)]]
        print("\nwhere the time of an original goes (ms/image):")
        print(f"  decode (Pillow)                  {per_item_seconds(decode_image, paths, args.repeats) * 1e3:8.3f}")
        print(f"  crop + exact area resize (ours)  "
              f"{per_item_seconds(lambda a: crop_and_resize(a, args.size), decoded, args.repeats) * 1e3:8.3f}")
        try:
            import cv2
        except ImportError:
            print("  OpenCV: not installed (opencv-python-headless), not compared")
            return
        cv2.setNumThreads(1)
        print(f"  decode (OpenCV {cv2.__version__})             "
              f"{per_item_seconds(lambda p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), paths, args.repeats) * 1e3:8.3f}")
        print(f"  INTER_AREA resize (OpenCV)       "
              f"{per_item_seconds(lambda a: cv2.resize(a, (args.size, args.size), interpolation=cv2.INTER_AREA), decoded, args.repeats) * 1e3:8.3f}")
        both = per_item_seconds(
            lambda p: cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (args.size, args.size), interpolation=cv2.INTER_AREA),
            paths, args.repeats,
        )
        print(f"  OpenCV decode + resize           {both * 1e3:8.3f}   (ours {original * 1e3:.3f}: OpenCV {original / both:.2f}x)")
        differences = [
            np.abs(crop_and_resize(a, args.size).astype(int)
                   - cv2.resize(a, (args.size, args.size), interpolation=cv2.INTER_AREA)).max()
            for a in decoded
        ]
        print(f"  ours vs OpenCV INTER_AREA: largest difference {max(differences)} gray level(s)")


if __name__ == "__main__":
    main()
