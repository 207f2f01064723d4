"""Test-time augmentation (TTA): several views of each image, one merged prediction.

View families, chosen by name (config `augment.tta`, `cxrlt predict --tta`):

`hflip` (seed 003)
    The image and its left-right mirror: 2 views.
`multicrop` (seed 004)
    Five crops, each `CROP_FRACTION` (0.875) of the side: the centre one
    (top-left offset floor((S - c) / 2), as the `center_crop` transform) and
    the four corners: 5 views. 0.875 is 224 / 256, the seeds' "store at 256,
    crop 224" recipe: with images stored at 256, `random_crop: 224` in
    training and no `augment.eval`, the crops are windows the model has
    seen, at its resolution. With `augment.eval: [center_crop 224]` the
    crops are cut from that centre crop (196 px, enlarged to the input).
`multiscale` (seed 004)
    Zoom about the centre by `SCALES` (0.9, 1.0, 1.1) with the geometry of
    the training `scale` transform (`warp_affine`; > 1 zooms in, a border
    uncovered by zooming out is black): 3 views, the 1.0 one being the
    image itself.

Several families combine as a product, crops first, then zoom, then the
mirror: `multicrop + hflip` is the classic ten-crop, all three give
5 x 3 x 2 = 30 views. Views are cut from the evaluation view: the image at
its stored size (`data.images.store_size`) after the evaluation transforms
(`augment.eval`, before their final resize), so crops keep the stored
resolution and a recipe evaluated on a centre crop gets crops of that
centre crop, zooms of it and its mirror, never pixels outside the field of
view it was evaluated on. Each view is then resized to the model input
size with the resize used in training (`resize_to`); the un-augmented view
is therefore exactly what prediction without TTA feeds the model, and the
mirror is the mirrored array of it.

The views' predictions are merged per class by `augment.tta_merge`
(`arithmetic`: mean probability; `geometric`: sigmoid of the mean logit, the
renormalised geometric mean; see `cxrlt.ensemble.merge` for why). Without
TTA, prediction is unchanged (one view, no merge).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cxrlt.data.transforms import EvalPipeline, resize_to, warp_affine
from cxrlt.ensemble.merge import MERGES, check_merge, merge_logits
from cxrlt.errors import ConfigError

__all__ = ["TTA_FAMILIES", "MERGES", "TestTimeAugmentation", "ViewDataset", "parse_tta", "check_merge", "merge_logits"]

TTA_FAMILIES = ("multicrop", "multiscale", "hflip")  # the order views are composed in
CROP_FRACTION = 0.875
SCALES = (0.9, 1.0, 1.1)
CORNERS = ("centre", "top-left", "top-right", "bottom-left", "bottom-right")


def parse_tta(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """Validated family names from a list or a comma-separated string ("hflip,multicrop").

    Returns them in composition order; unknown or repeated names raise ConfigError.
    """
    if names is None:
        return ()
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in TTA_FAMILIES]
    if unknown:
        raise ConfigError(
            f"unknown test-time augmentation {', '.join(map(repr, unknown))}; choose from {', '.join(TTA_FAMILIES)} "
            "(several separated by commas, e.g. hflip,multicrop)"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"test-time augmentation {', '.join(map(repr, repeated))} is listed twice")
    return tuple(n for n in TTA_FAMILIES if n in names)


def _crop_window(height: int, width: int, where: str, fraction: float) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of one of the five crops."""
    ch, cw = max(1, round(fraction * height)), max(1, round(fraction * width))
    tops = {"top": 0, "bottom": height - ch}
    lefts = {"left": 0, "right": width - cw}
    if where == "centre":
        return (height - ch) // 2, (width - cw) // 2, ch, cw
    vertical, horizontal = where.split("-")
    return tops[vertical], lefts[horizontal], ch, cw


class TestTimeAugmentation:
    """The views of one image for a set of TTA families, at the model input size.

    `base`: the evaluation pipeline whose view (before its final resize) the
    views are cut from; None: the stored image itself.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, names: str | Sequence[str] | None, size: int, crop_fraction: float = CROP_FRACTION,
                 scales: Sequence[float] = SCALES, base: EvalPipeline | None = None):
        if not 0 < crop_fraction <= 1:
            raise ConfigError(f"crop_fraction must lie in (0, 1], got {crop_fraction}")
        if not scales or any(s <= 0 for s in scales):
            raise ConfigError(f"scales must be positive numbers, got {list(scales)}")
        self.names = parse_tta(names)
        self.size = int(size)
        self.crop_fraction = float(crop_fraction)
        self.scales = tuple(float(s) for s in scales)
        self.base = base
        crops: Sequence[str | None] = CORNERS if "multicrop" in self.names else (None,)
        zooms: Sequence[float] = self.scales if "multiscale" in self.names else (1.0,)
        flips: Sequence[bool] = (False, True) if "hflip" in self.names else (False,)
        self.plan = list(itertools.product(crops, zooms, flips))

    @property
    def n_views(self) -> int:
        """Views per image (1 without TTA)."""
        return len(self.plan)

    def view_names(self) -> list[str]:
        """A readable name per view, in output order (e.g. "crop top-left, zoom 1.1, mirrored")."""
        names = []
        for crop, zoom, flip in self.plan:
            parts = ([f"crop {crop}"] if crop else []) + ([f"zoom {zoom:g}"] if zoom != 1.0 else [])
            parts += ["mirrored"] if flip else []
            names.append(", ".join(parts) or "original")
        return names

    def views(self, image: np.ndarray) -> np.ndarray:
        """(views, size, size) uint8 array of one (H, W) uint8 image, in `view_names` order."""
        image = np.asarray(image)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 image, got {image.dtype} {image.shape}")
        if self.base is not None:
            image = self.base.transform(image, None)
        out = np.empty((self.n_views, self.size, self.size), dtype=np.uint8)
        cache: dict[tuple[str | None, float], np.ndarray] = {}
        for v, (crop, zoom, flip) in enumerate(self.plan):
            key = (crop, zoom)
            if key not in cache:
                part = image
                if crop is not None:
                    top, left, h, w = _crop_window(*image.shape, crop, self.crop_fraction)
                    part = part[top:top + h, left:left + w]
                if zoom != 1.0:
                    part = warp_affine(np.ascontiguousarray(part), scale=zoom)
                cache[key] = resize_to(np.ascontiguousarray(part), self.size)
            out[v] = cache[key][:, ::-1] if flip else cache[key]
        return out

    def batch(self, images: np.ndarray) -> np.ndarray:
        """(batch, views, size, size) uint8 views of a (batch, H, W) uint8 batch."""
        return np.stack([self.views(image) for image in images]) if len(images) else np.zeros(
            (0, self.n_views, self.size, self.size), np.uint8)


class ViewDataset(Dataset):
    """Items: the (views, 1, size, size) uint8 views of each stored image."""

    def __init__(self, store: Sequence[np.ndarray], tta: TestTimeAugmentation):
        self.store = store
        self.tta = tta

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.tta.views(np.asarray(self.store[index]))).unsqueeze(1)
