"""Training throughput: the model alone vs the whole data path from the prepared cache.

For each model (timm name @ input size) it measures, in images/s:

(a) model only: forward + loss + backward + optimiser step on one uint8
    batch already on the device (the ceiling);
(b) full pipeline: the same step fed by the objects `cxrlt train` uses,
    i.e. a prepared cache (`CacheStore`, memory-mapped) -> `ImageDataset` with
    training augmentation (`build_pipeline`) -> `KeyedSampler` over a cxrlt
    sampler -> DataLoader worker processes (pinned memory on CUDA) -> device;
(c) loader only: (b)'s DataLoader drained without a model (what the CPU side
    can feed at most).

(b)/(a) is the share of the model's speed the data path keeps (target on a
GPU: >= 90%). The model is `cxrlt.models.build.build_model` (uint8 in,
normalisation inside), the loss and optimiser come from cxrlt's registries.
On CUDA the default is bf16 autocast and channels-last weights and inputs
(`--precision 32`, `--no-channels-last` turn them off; `--compile` wraps the
model in `torch.compile`).

Images: the NIH originals in ../shared/data/nih/images (with their labels)
are prepared into a cache at each input size; without them, generated
images are used. Timing excludes worker start-up and the first batches:
(b) and (c) skip `--warmup` batches plus the loader's prefetch queue
(2 x workers batches) before the clock starts, so a queue filled during
start-up cannot flatter them.

    python benchmarks/bench_throughput.py --device cuda            # the GPU table
    python benchmarks/bench_throughput.py --device cuda --compile
    python benchmarks/bench_throughput.py --device cpu --tiny      # seconds; keeps the script alive in CI
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
NIH = REPO.parent / "shared" / "data" / "nih"

# timm name @ input size: the models the performance targets are stated for.
GPU_MODELS = (
    "densenet121@224",
    "resnet50@224",
    "convnext_tiny@224",
    "swin_base_patch4_window7_224@224",
    "tf_efficientnetv2_s@384",
)
TINY_MODELS = ("resnet10t@32",)
# Typical chest X-ray training augmentation (cxrlt.data.transforms names).
AUGMENT = (
    {"name": "random_resized_crop", "scale": (0.7, 1.0)},
    {"name": "hflip"},
    {"name": "rotate", "degrees": 10.0},
    {"name": "brightness_contrast"},
)


@dataclass
class Result:
    """Throughput of one model, images/s."""

    model: str
    size: int
    batch: int
    model_only: float
    pipeline: float
    loader: float

    @property
    def ratio(self) -> float:
        """(b)/(a): the share of the model-only speed the full pipeline reaches."""
        return self.pipeline / self.model_only


def parse_model(text: str) -> tuple[str, int]:
    """'name@size' -> (name, size)."""
    name, _, size = text.partition("@")
    if not name or not size.isdigit():
        raise SystemExit(f"--models: expected NAME@SIZE such as densenet121@224, got {text!r}")
    return name, int(size)


def nih_table(workdir: Path, tiny: bool):
    """A LabelTable over the NIH originals with their 14 labels, or generated stand-ins."""
    import pandas as pd

    from cxrlt.data.table import LabelTable

    paths = sorted((NIH / "images").glob("*.png")) if (NIH / "images").is_dir() and not tiny else []
    if paths:
        entries = pd.read_csv(NIH / "Data_Entry_2017_v2020.csv.gz").set_index("Image Index")
        findings = entries.loc[[p.name for p in paths], "Finding Labels"].str.split("|")
        classes = sorted({f for row in findings for f in row} - {"No Finding"})
        labels = np.array([[c in row for c in classes] for row in findings], dtype=np.float32)
        source = f"{len(paths)} NIH originals (1024 x 1024 PNG)"
    else:
        from PIL import Image

        rng = np.random.default_rng(0)
        side, count = (64, 16) if tiny else (1024, 64)
        paths = []
        for i in range(count):
            path = workdir / f"gen{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(path)
            paths.append(path)
        classes = ["A", "B", "C"]
        labels = (rng.random((count, len(classes))) < 0.3).astype(np.float32)
        source = f"{count} generated {side} x {side} PNGs"
    meta = pd.DataFrame({"image_id": [p.stem for p in paths], "path": [str(p) for p in paths]})
    return LabelTable(meta, labels, tuple(classes), None), source


def measure(name: str, size: int, batch: int, table, cache: Path, device, args) -> Result:
    """(a), (b) and (c) for one model."""
    import torch
    from torch.utils.data import DataLoader

    from cxrlt.config import LossSpec, ModelConfig, OptimizerSpec, SamplerSpec, TransformSpec
    from cxrlt.data.dataset import ImageDataset, KeyedSampler
    from cxrlt.data.stats import LabelStats
    from cxrlt.data.store import open_store
    from cxrlt.data.transforms import build_pipeline
    from cxrlt.models.build import build_model

    classes = list(table.classes)
    model = build_model(ModelConfig(backbone=name), len(classes), image_size=size,
                        context={"class_names": classes, "train_labels": table.labels}, pretrained=False)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=layout).train()
    step_model = torch.compile(model) if args.compile else model
    loss = LossSpec(name="bce").build(class_counts=LabelStats.from_table(table), class_names=classes)
    optimizer = OptimizerSpec(name="adamw").build(params=[p for p in model.parameters() if p.requires_grad])
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        images = images.to(device, non_blocking=True).contiguous(memory_format=layout)
        targets = targets.to(device, non_blocking=True)
        with autocast:
            outputs = step_model(images, training_outputs=True)
        value = model.training_loss(loss, outputs.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    skip = args.warmup + 2 * args.workers  # warm-up steps, then the prefetch queue drains
    sampler = SamplerSpec(name=args.sampler).build(
        labels=table.labels, num_samples=(skip + args.steps) * batch, seed=0, rank=0, world_size=1)
    dataset = ImageDataset(open_store(table, size, cache), table.labels,
                           build_pipeline([TransformSpec(**spec) for spec in AUGMENT], size), seed=0)

    def loader() -> DataLoader:
        return DataLoader(dataset, batch_size=batch, sampler=KeyedSampler(sampler), num_workers=args.workers,
                          pin_memory=device.type == "cuda", drop_last=True,
                          prefetch_factor=2 if args.workers else None)

    # (a) one batch, already on the device
    images, targets, _ = next(iter(loader()))
    images, targets = images.to(device), targets.to(device)
    for _ in range(args.warmup):
        step(images, targets)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(images, targets)
    sync()
    model_only = args.steps * batch / (time.perf_counter() - start)

    def timed(consume) -> float:
        batches = iter(loader())
        for _ in range(skip):
            consume(*next(batches)[:2])
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            consume(*next(batches)[:2])
        sync()
        return args.steps * batch / (time.perf_counter() - start)

    pipeline = timed(step)  # (b)
    drained = timed(lambda images, targets: images.to(device, non_blocking=True))  # (c)
    return Result(name, size, batch, model_only, pipeline, drained)


def format_table(results: Sequence[Result]) -> str:
    """The printed table: one row per model."""
    lines = [f"{'model':<34}{'size':>5}{'batch':>6}{'(a) model img/s':>17}{'(b) pipeline img/s':>20}"
             f"{'(b)/(a)':>9}{'(c) loader img/s':>18}"]
    for r in results:
        lines.append(f"{r.model:<34}{r.size:>5}{r.batch:>6}{r.model_only:>17.1f}{r.pipeline:>20.1f}"
                     f"{r.ratio:>9.0%}{r.loader:>18.1f}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults depend on --device and --tiny)."""
    from cxrlt.data.images import default_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model at 32 px on generated images, a few steps: checks the script runs")
    parser.add_argument("--models", nargs="+", default=None, help="NAME@SIZE ... (timm names)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 at <= 256 px, else 128; tiny 4")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 50; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; tiny 1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes (default: available cores; tiny 1)")
    parser.add_argument("--sampler", default="instance", help="a cxrlt sampler name (instance, cycle, sqrt...)")
    parser.add_argument("--precision", choices=("bf16", "32"), default=None, help="default: bf16 on cuda, 32 on cpu")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last weights and inputs (default: on for cuda, off for cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow first steps)")
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    args.models = args.models or list(TINY_MODELS if args.tiny else GPU_MODELS)
    args.steps = args.steps or (2 if args.tiny else 50)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 10)
    args.workers = args.workers if args.workers is not None else (1 if args.tiny else default_workers())
    args.precision = args.precision or ("bf16" if cuda else "32")
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    return args


def main(argv: Sequence[str] | None = None) -> list[Result]:
    """Run the benchmark, print the table, return its rows."""
    args = parse_args(argv)
    import timm
    import torch

    from cxrlt.data.cache import prepare_cache
    from cxrlt.data.images import default_workers

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    models = [parse_model(m) for m in args.models]
    results = []
    with tempfile.TemporaryDirectory(prefix="cxrlt-throughput-") as tmp:
        table, source = nih_table(Path(tmp), args.tiny)
        hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"device {args.device} ({hardware}); torch {torch.__version__}, timm {timm.__version__}; "
              f"precision {args.precision}, channels-last {args.channels_last}, compile {args.compile}; "
              f"{args.workers} loader workers, sampler {args.sampler}; images: {source}; "
              f"{args.steps} timed steps after {args.warmup} warm-up")
        caches = {}
        for name, size in models:
            if size not in caches:
                caches[size] = prepare_cache(table, Path(tmp) / f"cache{size}", size,
                                             workers=1 if args.tiny else default_workers(), progress=False)
            batch = args.batch_size or (4 if args.tiny else 256 if size <= 256 else 128)
            result = measure(name, size, batch, table, caches[size], device, args)
            results.append(result)
            print(format_table([result]).splitlines()[-1], flush=True)
    print()
    print(format_table(results))
    if device.type == "cuda":
        print("targets: (b)/(a) >= 90% for every model; densenet121 @ 224 (b) >= 3000 img/s on one H100")
    return results


if __name__ == "__main__":
    main()
