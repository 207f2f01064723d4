"""Per-image augmentation on uint8 grayscale arrays.

A transform is registered by name; its parameters are its YAML schema
(`augment.train: [{name: hflip, p: 0.5}, ...]`). Each is called as
`transform(image, rng)` with a numpy Generator seeded from (run seed, epoch,
position in the epoch), so a batch is reproducible from the seed alone,
also in worker processes and after a resumed run.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image

from cxrlt.registry import Registry

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
TRANSFORMS: Registry[Transform] = Registry("transform")


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square uint8 image to (size, size); anti-aliased when shrinking."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, reducing_gap=None))


class Pipeline:
    """Transforms applied in order, then a resize to the model input size."""

    def __init__(self, transforms: Sequence[Transform], size: int):
        self.transforms = list(transforms)
        self.size = size

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for transform in self.transforms:
            image = transform(image, rng)
        return resize_to(np.ascontiguousarray(image), self.size)


def build_pipeline(specs: Sequence, size: int) -> Pipeline:
    """A pipeline from config `TransformSpec`s (empty for evaluation)."""
    return Pipeline([spec.build() for spec in specs], size)
