"""Time one 224 x 224 model input three ways, side by side on the same images.

1. TorchXRayVision's `NIH_Dataset` with the transforms of its README
   (`XRayCenterCrop()` + `XRayResizer(224)`): skimage decode,
   `normalize(img, 255)`, one channel, crop, resize; a float32 (1, 224, 224).
2. cxrlt decoding the originals: `ImageDataset` over a `DecodingStore`
   (decode, centre crop, exact area resize); a uint8 (1, 224, 224) tensor.
3. cxrlt reading a prepared cache: `ImageDataset` over a `CacheStore`
   (what `cxrlt train` uses when data.images.cache is set).

Uses the real 1024 x 1024 NIH PNGs in ../shared/data/nih/images when present,
else generated 1024 x 1024 PNGs. Files are read once before timing, so every
path is measured with the operating system's file cache warm. Everything runs
in this one process on one thread (run with OMP_NUM_THREADS=1). For each path
it prints wall and CPU ms/image, images/s, images/s per core (1 / CPU time:
the steadier figure on a shared machine), the ratios to TorchXRayVision, how
close the outputs are (both mapped to [0, 1]), and where the time of an
original goes (OpenCV's equivalents when it is importable).

TorchXRayVision is not a cxrlt dependency; install it in a separate
environment that also sees cxrlt's packages, e.g.::

    python3 -m venv /work/venv-xrv
    echo /work/venv/lib/python3.11/site-packages \
        > /work/venv-xrv/lib/python3.11/site-packages/cxrlt-venv.pth
    /work/venv-xrv/bin/pip install torchxrayvision==1.5.7 opencv-python-headless==5.0.0.93
    # pulls scikit-image==0.26.0 imageio==2.38.1; torch 2.14.1 comes from the base venv

    OMP_NUM_THREADS=1 /work/venv-xrv/bin/python benchmarks/bench_loading.py [--size 224] [--repeats 3] [--limit N]

Without it the two cxrlt paths are still measured and the install line is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
NIH_IMAGES = REPO.parent / "shared" / "data" / "nih" / "images"
XRV_INSTALL = "pip install torchxrayvision==1.5.7 opencv-python-headless==5.0.0.93"


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
    return per_item_times(function, items, repeats, (clock,))[0]


def per_item_times(function: Callable, items: Sequence, repeats: int,
                   clocks: Sequence[Callable[[], float]] = (time.perf_counter, time.process_time)) -> list[float]:
    """Best of `repeats` passes over `items`, seconds per item, for each clock (one set of passes)."""
    function(items[0])  # first-call costs (imports, weight tables) outside the timing
    best = [float("inf")] * len(clocks)
    for _ in range(repeats):
        start = [clock() for clock in clocks]
        for item in items:
            function(item)
        best = [min(b, (clock() - s) / len(items)) for b, clock, s in zip(best, clocks, start)]
    return best


def xrv_dataset(paths: Sequence[Path], size: int, workdir: Path):
    """TorchXRayVision's NIH_Dataset over `paths` with its README transforms, or None if not installed.

    The dataset reads its label CSV; a CSV listing exactly `paths` (real NIH
    rows when the label file is at hand, else neutral rows) keeps its rows in
    the order of `paths`. All views and repeat visits are kept (its defaults
    would drop non-PA images and all but one image per patient).
    """
    try:
        import torchvision
        import torchxrayvision as xrv
    except ImportError:
        return None
    import pandas as pd

    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise ValueError("NIH_Dataset reads one image folder; the benchmark images are in several")
    names = [p.name for p in paths]
    label_file = NIH_IMAGES.parent / "Data_Entry_2017_v2020.csv.gz"
    known = pd.read_csv(label_file).set_index("Image Index") if label_file.is_file() else None
    if known is not None and set(names) <= set(known.index):
        csv = known.loc[names].reset_index()
    else:
        csv = pd.DataFrame({"Image Index": names, "Finding Labels": "No Finding", "Follow-up #": 0,
                            "Patient ID": range(len(names)), "Patient Age": 50, "Patient Sex": "M",
                            "View Position": "PA"})
    csv_path = workdir / "xrv_labels.csv"
    csv.to_csv(csv_path, index=False)
    transform = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size)])
    dataset = xrv.datasets.NIH_Dataset(imgpath=str(folders.pop()), csvpath=str(csv_path), views=["*"],
                                       unique_patients=False, transform=transform)
    if list(dataset.csv["Image Index"]) != names:
        raise RuntimeError("NIH_Dataset reordered or dropped images; the comparison would be misaligned")
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from cxrlt.data.cache import prepare_cache
    from cxrlt.data.dataset import ImageDataset
    from cxrlt.data.images import crop_and_resize, decode_image, load_image
    from cxrlt.data.store import DecodingStore, open_store
    from cxrlt.data.transforms import build_pipeline

    with tempfile.TemporaryDirectory(prefix="cxrlt-bench-") as tmp:
        paths, description = benchmark_images(args.limit, Path(tmp))
        for path in paths:
            path.read_bytes()  # warm the OS file cache for all contenders
        print(f"images: {description}; target {args.size} x {args.size}; best of {args.repeats} passes; "
              f"one process, torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")

        table = table_for(paths)
        cache = prepare_cache(table, Path(tmp) / "cache", args.size, workers=1, progress=False)
        pipeline = build_pipeline([], args.size)  # evaluation pipeline: the stored pixels as they are
        decoding = ImageDataset(DecodingStore(table.image_paths(), args.size), table.labels, pipeline)
        cached = ImageDataset(open_store(table, args.size, cache), table.labels, pipeline)
        rows = list(range(len(paths)))
        contenders: list[tuple[str, Callable[[int], torch.Tensor]]] = []
        xrv = xrv_dataset(paths, args.size, Path(tmp))
        if xrv is None:
            print(f"TorchXRayVision: not installed here, not compared (`{XRV_INSTALL}`; see this script's docstring)")
        else:
            import torchxrayvision

            print(f"TorchXRayVision {torchxrayvision.__version__}: NIH_Dataset + Compose([XRayCenterCrop(), "
                  f"XRayResizer({args.size})]) (skimage engine, its default)")
            contenders.append(("TorchXRayVision NIH_Dataset", lambda i: torch.from_numpy(xrv[i]["img"])))
        contenders += [
            ("cxrlt, decoding originals", lambda i: decoding[i][0]),
            ("cxrlt, prepared cache", lambda i: cached[i][0]),
        ]

        print(f"\n{'path':<30}{'wall ms/img':>12}{'images/s':>10}{'CPU ms/img':>12}{'img/s per core':>16}")
        figures = {}
        for name, function in contenders:
            wall, cpu = per_item_times(function, rows, args.repeats)
            figures[name] = (wall, cpu)
            print(f"{name:<30}{wall * 1e3:>12.3f}{1 / wall:>10.1f}{cpu * 1e3:>12.3f}{1 / cpu:>16.1f}")
        if xrv is not None:
            base_wall, base_cpu = figures["TorchXRayVision NIH_Dataset"]
            print("\nspeed relative to TorchXRayVision (per core = CPU time; wall):")
            for name, target in (("cxrlt, decoding originals", 3), ("cxrlt, prepared cache", 100)):
                wall, cpu = figures[name]
                print(f"  {name:<28} {base_cpu / cpu:8.1f}x per core {base_wall / wall:8.1f}x wall   "
                      f"(target >= {target}x)")
        (_, decode_cpu), (_, cache_cpu) = figures["cxrlt, decoding originals"], figures["cxrlt, prepared cache"]
        print(f"prepared cache vs decoding originals: {decode_cpu / cache_cpu:.0f}x per core")
        if xrv is not None:
            _report_agreement(xrv, decoding, rows, args.size)

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


def _report_agreement(xrv, decoding, rows: Sequence[int], size: int) -> None:
    """How far cxrlt's inputs are from TorchXRayVision's, both mapped to [0, 1].

    TorchXRayVision scales 0..255 to [-1024, 1024] (x -> (x + 1024) / 2048
    undoes it); cxrlt keeps uint8 (x -> x / 255). Its default skimage resize
    (Gaussian pre-filter + bilinear) is not an area average, so the outputs
    differ slightly; with `XRayResizer(engine="cv2")` (OpenCV INTER_AREA) the
    geometry is the same as cxrlt's and only rounding to uint8 remains.
    """
    import torchxrayvision

    theirs = np.stack([(xrv[i]["img"][0].astype(np.float64) + 1024) / 2048 for i in rows])
    ours = np.stack([decoding[i][0][0].numpy() / 255.0 for i in rows])
    gap = np.abs(theirs - ours)
    print(f"\noutputs in [0, 1], cxrlt vs TorchXRayVision README transforms (skimage resize), {len(rows)} images: "
          f"max |diff| {gap.max():.4f} ({gap.max() * 255:.1f} gray levels), mean {gap.mean():.5f} "
          f"({gap.mean() * 255:.2f} levels), 99th percentile {np.quantile(gap, 0.99) * 255:.2f} levels")
    try:
        import cv2  # noqa: F401  (XRayResizer's cv2 engine imports it)
    except ImportError:
        print("  (XRayResizer(engine='cv2') not compared: OpenCV not installed)")
        return
    resize = torchxrayvision.datasets.XRayResizer(size, engine="cv2")
    crop = torchxrayvision.datasets.XRayCenterCrop()
    theirs_cv2 = []
    for i in rows:
        raw = torchxrayvision.datasets.normalize(_xrv_raw(xrv, i), 255, reshape=True)  # as NIH_Dataset does
        theirs_cv2.append((resize(crop(raw))[0].astype(np.float64) + 1024) / 2048)
    gap = np.abs(np.stack(theirs_cv2) - ours)
    print(f"  vs XRayResizer(engine='cv2'): max |diff| {gap.max() * 255:.2f} gray levels, mean {gap.mean() * 255:.3f} "
          "(cxrlt rounds to uint8: at most 0.5 level expected)")


def _xrv_raw(xrv, index: int) -> np.ndarray:
    """The image NIH_Dataset reads for row `index`, before any transform."""
    from skimage.io import imread

    return imread(os.path.join(xrv.imgpath, xrv.csv["Image Index"].iloc[index]))


if __name__ == "__main__":
    main()
