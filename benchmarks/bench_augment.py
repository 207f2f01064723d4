"""Time per-image augmentation (256 stored -> 224 input) and batch mixing on one CPU thread.

    python benchmarks/bench_augment.py [--data ../shared/data] [--repeats 5] [--batch 64]

Images: the real NIH PNGs in `<data>/nih/images` (1024 x 1024) shrunk to the
stored size 256, as `cxrlt prepare` would store them. Prints, per pipeline,
the mean milliseconds per image (best of `repeats` passes over all images,
each image with its own generator as `ImageDataset` does, generator creation
included), then each transform alone with p = 1, then torchvision's v2
transforms on uint8 tensors for a comparable pipeline (speed reference only;
its ColorJitter and RandomErasing are not the same maths), then each mixer on
a (batch, 1, 224, 224) uint8 batch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxrlt.data.transforms import Pipeline, resize_to
from cxrlt.registry import MIXERS, TRANSFORMS

SEED_003 = [
    ("random_crop", {"size": 224}),
    ("hflip", {"p": 0.5}),
    ("affine", {"degrees": 10, "scale": [0.9, 1.1], "translate": 0.05, "p": 0.5}),
    ("brightness_contrast", {"brightness": 0.1, "contrast": 0.1, "p": 0.5}),
    ("cutout", {"holes": 1, "size": [0.1, 0.25], "p": 0.5}),
]
PIPELINES = {
    "seed 003 (crop, flip, affine, b/c, cutout; p as written)": SEED_003,
    "same, every transform applied (p = 1)": [(name, {**params, "p": 1.0}) for name, params in SEED_003],
    "random_resized_crop [0.5, 1] + hflip + rotate 10 + gamma": [
        ("random_resized_crop", {"scale": [0.5, 1.0]}), ("hflip", {"p": 0.5}), ("rotate", {"degrees": 10}),
        ("gamma", {"p": 0.5}),
    ],
}
ALONE = {
    "resize": {"size": 224}, "center_crop": {"size": 224}, "random_crop": {"size": 224},
    "random_resized_crop": {"scale": [0.5, 1.0]}, "hflip": {"p": 1.0}, "rotate": {"p": 1.0},
    "scale": {"p": 1.0}, "affine": {"degrees": 10, "translate": 0.05, "scale": [0.9, 1.1], "shear": 5, "p": 1.0},
    "brightness_contrast": {"p": 1.0}, "gamma": {"p": 1.0}, "gaussian_noise": {"p": 1.0}, "blur": {"p": 1.0},
    "cutout": {"p": 1.0},
}


def load(folder: Path, stored: int) -> list[np.ndarray]:
    """Every PNG of `folder` as an 8-bit grayscale array shrunk to stored x stored."""
    images = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            images.append(resize_to(np.asarray(image.convert("L")), stored))
    return images


def per_image_ms(function, images: list[np.ndarray], repeats: int) -> float:
    """Best-of-`repeats` mean milliseconds per image of `function(image, position)`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for position, image in enumerate(images):
            function(image, position)
        best = min(best, (time.perf_counter() - start) / len(images))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)

    images = load(args.data / "nih" / "images", 256)
    print(f"{len(images)} NIH images stored at 256 x 256 -> model input 224; one thread; ms per image")
    for title, specs in PIPELINES.items():
        pipeline = Pipeline([TRANSFORMS.build(name, **params) for name, params in specs], 224)
        ms = per_image_ms(lambda image, i: pipeline(image, np.random.default_rng((0, 0, i))), images, args.repeats)
        print(f"  {ms:7.3f}  {title}")
    print("each transform alone on a 256 x 256 image (no final resize):")
    for name, params in ALONE.items():
        transform = TRANSFORMS.build(name, **params)
        ms = per_image_ms(lambda image, i: transform(image, np.random.default_rng((0, 0, i))), images, args.repeats)
        print(f"  {ms:7.3f}  {name}")

    from torchvision.transforms import v2

    reference = v2.Compose([
        v2.RandomCrop(224), v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1))], p=0.5),
        v2.RandomApply([v2.ColorJitter(brightness=0.1, contrast=0.1)], p=0.5),
        v2.RandomErasing(p=0.5, scale=(0.01, 0.0625), ratio=(1.0, 1.0)),
    ])
    tensors = [torch.from_numpy(image.copy()).unsqueeze(0) for image in images]
    ms = per_image_ms(lambda image, i: reference(tensors[i]), images, args.repeats)
    print(f"torchvision v2 on uint8 tensors, comparable pipeline: {ms:.3f} ms per image")

    batch = torch.from_numpy(np.stack([resize_to(images[i % len(images)], 224) for i in range(args.batch)]))
    batch = batch.unsqueeze(1).contiguous()
    targets = torch.zeros(args.batch, 26)
    print(f"mixing a ({args.batch}, 1, 224, 224) uint8 batch on the CPU (p = 1), ms per batch:")
    for title, name, params in [("mosaic crop", "mosaic", {"variant": "crop"}),
                                ("mosaic resize", "mosaic", {"variant": "resize"}),
                                ("mixup", "mixup", {}), ("cutmix", "cutmix", {})]:
        mixer = MIXERS.build(name, **params, p=1.0)
        best = float("inf")
        for seed in range(args.repeats * 4):
            start = time.perf_counter()
            mixer(batch, targets, torch.Generator().manual_seed(seed))
            best = min(best, time.perf_counter() - start)
        print(f"  {best * 1000:7.2f}  {title}")


if __name__ == "__main__":
    main()
