"""Per-image augmentation on uint8 grayscale arrays.

A transform is registered by name; its parameters are its YAML schema::

    augment:
      train:
        - {name: random_crop, size: 224}          # stored 256 -> 224 (seeds 003, 004)
        - {name: hflip, p: 0.5}
        - {name: affine, degrees: 10, scale: [0.9, 1.1], translate: 0.05, p: 0.5}
        - {name: brightness_contrast, brightness: 0.1, contrast: 0.1, p: 0.5}
        - {name: cutout, holes: 1, size: [0.1, 0.25], p: 0.5}

Each is called as `transform(image, rng)` on a uint8 (H, W) array with a
numpy Generator seeded from (run seed, epoch, position in the epoch), so a
batch is reproducible from the seed alone, also in worker processes and after
a resumed run: the same generator state gives the same output. Images enter
at the stored size (`data.images.store_size`) and `Pipeline` resizes the
result to the model input size (`data.images.size`) once, at the end; a crop
therefore costs no interpolation of its own and a non-square crop is
stretched to the square input, as torchvision's RandomResizedCrop does.

Evaluation (`augment.eval`, see `eval_pipeline`) takes deterministic
transforms only: subclasses of `DeterministicTransform` (`resize`,
`center_crop`), whose output depends on the image alone. Each keeps a
window of its input and resizes it to a square, and says which
(`window`), so a point of the stored image (a box corner) can be followed
to the model input (`EvalPipeline.map_point`). Everything else is random
and refused there.

Random transforms take `p`, the probability of being applied (a skipped
transform returns its input). Ranges are written `[low, high]` and drawn
uniformly; a single number `x` means a range symmetric about "no change":
`degrees: 10` is [-10, 10], `contrast: 0.2` is [0.8, 1.2]. Geometry follows
image conventions: x to the right, y down, positive angles turn the picture
counter-clockwise (as `np.rot90`), and the centre of rotation, scaling and
shear is the image centre. Pixels uncovered by a warp get `fill` (0, black).

All work is done with Pillow or numpy lookup tables on uint8; no float copy
of the image is made except for Gaussian noise.
"""

from __future__ import annotations

import abc
import math
from typing import Annotated, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, Field

from cxrlt.config import refuse_random_transforms
from cxrlt.errors import ConfigError
from cxrlt.params import Fill, FractionRange, NonNegativeRange, Pixels, PositiveRange, Probability, Spread
from cxrlt.registry import TRANSFORMS

__all__ = [
    "DeterministicTransform",
    "EvalPipeline",
    "Pipeline",
    "build_pipeline",
    "eval_pipeline",
    "resize_to",
    "warp_affine",
    "cutout_boxes",
]

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _span(value: float | Sequence[float], centre: float = 0.0) -> tuple[float, float]:
    """`x` -> (centre - x, centre + x); `[low, high]` as given."""
    if isinstance(value, (int, float)):
        return (centre - value, centre + value)
    low, high = value
    return (float(low), float(high))


# -------------------------------------------------------------------- helpers
def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 image to (size, size); anti-aliased when shrinking."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, reducing_gap=None))


def warp_affine(image: np.ndarray, angle: float = 0.0, translate: tuple[float, float] = (0.0, 0.0),
                scale: float = 1.0, shear: tuple[float, float] = (0.0, 0.0), fill: int = 0) -> np.ndarray:
    """Bilinear affine warp of a uint8 image about its centre, same output size.

    The forward map sends a point p to c + t + R(angle) S(scale) Sh_y Sh_x (p - c), with c the
    image centre, t = `translate` in pixels (x, y), `angle` in degrees (positive: counter-clockwise
    on screen), and `shear` = (x, y) shear angles in degrees (x' = x - tan(sx) y, then
    y' = y - tan(sy) x'). This is torchvision's `F.affine` (same shear and translation; its angle
    turns clockwise, so `angle` here is minus its angle) and `F.rotate` for pure rotations.
    """
    height, width = image.shape[:2]
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    # y points down, so this matrix turns the picture counter-clockwise.
    rotation = np.array([[cos, sin], [-sin, cos]])
    shear_x = np.array([[1.0, -math.tan(math.radians(shear[0]))], [0.0, 1.0]])
    shear_y = np.array([[1.0, 0.0], [-math.tan(math.radians(shear[1])), 1.0]])
    forward = rotation @ (scale * np.eye(2)) @ shear_y @ shear_x
    inverse = np.linalg.inv(forward)
    # Pillow's continuous coordinates put pixel i's centre at i + 0.5, so the centre is (W/2, H/2).
    centre = np.array([width / 2.0, height / 2.0])
    offset = centre - inverse @ (centre + np.asarray(translate, dtype=float))
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    warped = Image.fromarray(image).transform((width, height), Image.Transform.AFFINE, data,
                                              resample=Image.Resampling.BILINEAR, fillcolor=fill)
    return np.asarray(warped)


def cutout_boxes(height: int, width: int, rng: np.random.Generator, holes: int,
                 size: tuple[float, float]) -> list[tuple[int, int, int, int]]:
    """Cutout holes as (top, bottom, left, right), half-open, clipped to the image.

    Each hole is a square of side round(u * min(H, W)), u ~ U(size), centred on a pixel drawn
    uniformly from the whole image (DeVries & Taylor 2017), so holes near a border are cut by it.
    """
    boxes = []
    short = min(height, width)
    for _ in range(holes):
        side = int(round(rng.uniform(*size) * short))
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        top, left = cy - side // 2, cx - side // 2
        boxes.append((max(top, 0), min(top + side, height), max(left, 0), min(left + side, width)))
    return boxes


def _lookup(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)[image]


def _check_crop(size: int, height: int, width: int, name: str) -> None:
    if size > height or size > width:
        raise ConfigError(
            f"the {name} transform (augment.train / augment.eval): crop size {size} is larger than the image it "
            f"receives ({width}x{height}); set data.images.store_size to at least {size} or lower the crop size"
        )


class _Described:
    """Base of every transform: `repr` lists the resolved parameters (shown in logs and the run folder).

    `narrows_view` marks a transform that keeps a fixed-size window of its
    input (`center_crop`, `random_crop`): trained with one, a model never sees
    the whole stored image, so evaluation should take the same window.
    """

    narrows_view: ClassVar[bool] = False

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class DeterministicTransform(_Described, abc.ABC):
    """Base of deterministic transforms, the only ones `augment.eval` accepts.

    The output depends on the image alone (the generator is ignored): a
    `window` of the input, resized to a square.
    """

    deterministic: ClassVar[bool] = True  # what the configuration checks `augment.eval` against

    @abc.abstractmethod
    def window(self, height: int, width: int) -> tuple[int, int, int, int, int]:
        """(top, left, window height, window width, output side) for an input of (height, width)."""

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        top, left, h, w, side = self.window(image.shape[0], image.shape[1])
        part = image[top:top + h, left:left + w]
        return part if part.shape[:2] == (side, side) else resize_to(np.ascontiguousarray(part), side)


class RandomTransform(_Described, abc.ABC):
    """Base of random transforms: `apply` runs with probability `p`.

    The coin is always drawn first, so the draws of later transforms do not
    depend on whether this one ran.
    """

    p: float = 1.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return image
        return self.apply(image, rng)

    @abc.abstractmethod
    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transform `image` (called when the coin says so)."""


# ------------------------------------------------------------- size and crops
@TRANSFORMS.register("resize")
class Resize(DeterministicTransform):
    """Resize to `size` x `size` (anti-aliased), e.g. 512 stored -> 256 before a 224 crop;
    deterministic (`augment.eval`)."""

    def __init__(self, size: Pixels):
        self.size = size

    def window(self, height: int, width: int) -> tuple[int, int, int, int, int]:
        return 0, 0, height, width, self.size


@TRANSFORMS.register("center_crop")
class CenterCrop(DeterministicTransform):
    """The central `size` x `size` window (top-left offset floor((H - size) / 2));
    deterministic (`augment.eval`)."""

    narrows_view = True

    def __init__(self, size: Pixels):
        self.size = size

    def window(self, height: int, width: int) -> tuple[int, int, int, int, int]:
        _check_crop(self.size, height, width, "center_crop")
        return (height - self.size) // 2, (width - self.size) // 2, self.size, self.size, self.size


@TRANSFORMS.register("random_crop")
class RandomCrop(RandomTransform):
    """A `size` x `size` window at a uniformly drawn position (every position equally likely).

    Seeds 003/004: images stored at 256 and cropped to 224. When skipped
    (p < 1) the whole image goes on and is resized to the model input size.
    Evaluation then usually takes the centre window of the same size
    (`augment.eval: [{name: center_crop, size: 224}]`).
    """

    narrows_view = True

    def __init__(self, size: Pixels, p: Probability = 1.0):
        self.size = size
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_crop(self.size, image.shape[0], image.shape[1], "random_crop")
        top = int(rng.integers(0, image.shape[0] - self.size + 1))
        left = int(rng.integers(0, image.shape[1] - self.size + 1))
        return image[top:top + self.size, left:left + self.size]


@TRANSFORMS.register("random_resized_crop")
class RandomResizedCrop(RandomTransform):
    """A window covering a fraction `scale` of the area with aspect ratio (w / h) in `ratio`.

    Drawn as torchvision's RandomResizedCrop: area fraction ~ U(scale), log
    ratio ~ U(log ratio), up to 10 tries for a window that fits, then the
    largest centred window with the ratio clipped into `ratio`. The window is
    stretched to the square model input by the pipeline's final resize.
    Defaults are torchvision's; small windows can cut a finding out of a
    chest X-ray while keeping its label, so a larger lower bound (e.g.
    [0.5, 1]) is often preferable.
    """

    def __init__(self, scale: FractionRange = (0.08, 1.0), ratio: PositiveRange = (3 / 4, 4 / 3),
                 p: Probability = 1.0):
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.p = p

    def window(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """Draw (top, left, h, w) of the crop window."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        top, left, h, w = self.window(image.shape[0], image.shape[1], rng)
        return image[top:top + h, left:left + w]


# -------------------------------------------------------------------- geometry
@TRANSFORMS.register("hflip")
class HorizontalFlip(RandomTransform):
    """Mirror left-right (seed 003)."""

    def __init__(self, p: Probability = 0.5):
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return image[:, ::-1]


@TRANSFORMS.register("affine")
class Affine(RandomTransform):
    """Rotation, scaling, translation and shear in one bilinear warp about the centre.

    angle ~ U(degrees); scale factor ~ U(scale); shift ~ U(translate) times
    the width (x) and, drawn independently, times the height (y); shear
    angles (degrees) ~ U(shear) along x and ~ U(shear_y) along y (as in
    torchvision, a single `shear` shears along x only). See `warp_affine` for
    the exact map. One warp means one interpolation however many are used.
    """

    def __init__(self, degrees: Spread = 0.0, translate: Spread = 0.0, scale: PositiveRange = (1.0, 1.0),
                 shear: Spread = 0.0, shear_y: Spread = 0.0, fill: Fill = 0, p: Probability = 0.5):
        self.degrees = _span(degrees)
        self.translate = _span(translate)
        self.scale = tuple(scale)
        self.shear = _span(shear)
        self.shear_y = _span(shear_y)
        self.fill = fill
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        angle = rng.uniform(*self.degrees)
        factor = rng.uniform(*self.scale)
        shift = (rng.uniform(*self.translate) * width, rng.uniform(*self.translate) * height)
        shear = (rng.uniform(*self.shear), rng.uniform(*self.shear_y))
        return warp_affine(image, angle, shift, factor, shear, self.fill)


@TRANSFORMS.register("rotate")
class Rotate(Affine):
    """Rotation by an angle ~ U(degrees) about the centre (counter-clockwise when positive)."""

    def __init__(self, degrees: Spread = 10.0, fill: Fill = 0, p: Probability = 0.5):
        super().__init__(degrees=degrees, fill=fill, p=p)


@TRANSFORMS.register("scale")
class Scale(Affine):
    """Zoom about the centre by a factor ~ U(scale) (> 1 zooms in; the output size is kept)."""

    def __init__(self, scale: PositiveRange = (0.9, 1.1), fill: Fill = 0, p: Probability = 0.5):
        super().__init__(scale=scale, fill=fill, p=p)


# ------------------------------------------------------------------ intensity
@TRANSFORMS.register("brightness_contrast")
class BrightnessContrast(RandomTransform):
    """out = m + c (x - m) + 255 b, rounded and clipped to [0, 255].

    m is the image's mean intensity, c ~ U(contrast) (a number x means
    [1 - x, 1 + x], clipped at 0) and b ~ U(brightness) (a number x means
    [-x, x]; a fraction of the full range). Contrast is stretched about the
    mean so that it does not also shift the brightness.
    """

    def __init__(self, brightness: Spread = 0.1, contrast: Spread = 0.1, p: Probability = 0.5):
        self.brightness = _span(brightness)
        low, high = _span(contrast, centre=1.0)
        self.contrast = (max(low, 0.0), high)
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shift = rng.uniform(*self.brightness) * 255.0
        factor = rng.uniform(*self.contrast)
        mean = float(image.mean())
        return _lookup(image, mean + factor * (np.arange(256.0) - mean) + shift)


@TRANSFORMS.register("gamma")
class Gamma(RandomTransform):
    """out = 255 (x / 255) ** g with log g ~ U(log gamma) (so g and 1/g are equally likely)."""

    def __init__(self, gamma: PositiveRange = (0.8, 1.25), p: Probability = 0.5):
        self.gamma = tuple(gamma)
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = math.exp(rng.uniform(math.log(self.gamma[0]), math.log(self.gamma[1])))
        return _lookup(image, 255.0 * (np.arange(256.0) / 255.0) ** g)


@TRANSFORMS.register("gaussian_noise")
class GaussianNoise(RandomTransform):
    """Adds N(0, s^2) per pixel, s ~ U(std) as a fraction of 255; rounded and clipped."""

    def __init__(self, std: NonNegativeRange = (0.01, 0.03), p: Probability = 0.5):
        self.std = tuple(std)
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = rng.uniform(*self.std) * 255.0
        noisy = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@TRANSFORMS.register("blur")
class Blur(RandomTransform):
    """Gaussian blur with standard deviation ~ U(radius) pixels (Pillow's GaussianBlur)."""

    def __init__(self, radius: PositiveRange = (0.1, 1.5), p: Probability = 0.5):
        self.radius = tuple(radius)
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = rng.uniform(*self.radius)
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


# ---------------------------------------------------------------- occlusion
@TRANSFORMS.register("cutout")
class Cutout(RandomTransform):
    """`holes` squares set to `fill`; side ~ U(size) times the shorter side (see `cutout_boxes`)."""

    def __init__(self, holes: Annotated[int, Field(ge=1)] = 1, size: FractionRange = (0.1, 0.25),
                 fill: Fill = 0, p: Probability = 0.5):
        self.holes = holes
        self.size = tuple(size)
        self.fill = fill
        self.p = p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = image.copy()
        for top, bottom, left, right in cutout_boxes(image.shape[0], image.shape[1], rng, self.holes, self.size):
            out[top:bottom, left:right] = self.fill
        return out


# ------------------------------------------------------------------ pipeline
class Pipeline:
    """Transforms applied in order, then a resize to the model input size.

    The result is always a fresh, C-contiguous, writable uint8 array: never a
    view into the (possibly memory-mapped, read-only) image store, so
    `torch.from_numpy` can take it as it is.
    """

    def __init__(self, transforms: Sequence[Transform], size: int):
        self.transforms = list(transforms)
        self.size = size

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        source = image
        image = resize_to(np.ascontiguousarray(self.transform(image, rng)), self.size)
        if image is source or not image.flags.writeable or not image.flags.owndata:
            image = image.copy()
        return image

    def transform(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """The transforms alone, at the size they leave the image (no final resize)."""
        for transform in self.transforms:
            image = transform(image, rng)
        return image

    def __repr__(self) -> str:
        return f"Pipeline({self.transforms!r}, size={self.size})"


def build_pipeline(specs: Sequence, size: int) -> Pipeline:
    """The training pipeline from config `TransformSpec`s (evaluation: `eval_pipeline`)."""
    return Pipeline([spec.build() for spec in specs], size)


class EvalPipeline(Pipeline):
    """Deterministic transforms (`augment.eval`), then the resize to the model input size.

    `specs` are the transforms as `{name: ..., **params}` dicts, as saved in
    `model.json` so that a saved model predicts as it was evaluated.
    """

    def __init__(self, transforms: Sequence[DeterministicTransform], size: int, specs: Sequence[dict[str, Any]]):
        super().__init__(transforms, size)
        self.specs = [dict(spec) for spec in specs]

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return super().__call__(image, rng)

    def map_point(self, x: float, y: float, height: int, width: int) -> tuple[float, float]:
        """Where the point (x, y) of an input of (height, width) lands in the output (pixel i spans [i, i + 1))."""
        for transform in self.transforms:
            top, left, h, w, side = transform.window(height, width)
            x, y = (x - left) * side / w, (y - top) * side / h
            height = width = side
        return x * self.size / width, y * self.size / height


def eval_pipeline(specs: Sequence[Any], size: int) -> EvalPipeline:
    """The evaluation pipeline: validation, test, predict, TTA views, tau tuning and class maps all use it.

    `specs`: config `TransformSpec`s (`augment.eval`) or the `{name: ..., **params}` dicts saved in
    `model.json` (none: the whole stored image, resized). Unknown names, bad parameters and random
    transforms are ConfigErrors.
    """
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence):
        raise ConfigError(f"evaluation transforms: expected a list of {{name: ..., parameters}}, got {specs!r}")
    flat = [spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec for spec in specs]
    for i, spec in enumerate(flat):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ConfigError(f"evaluation transform {i}: expected {{name: ..., parameters}}, got {spec!r}")
    refuse_random_transforms([spec["name"] for spec in flat])
    transforms = [TRANSFORMS.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"}) for spec in flat]
    return EvalPipeline(transforms, size, flat)
